"""Training variants of chat templates: `{% generation %}` markers around assistant turns for assistant-only loss.

TRL patches the templates of models it knows (Qwen, Llama 3, Gemma...). SmolLM2 and other plain ChatML templates are
not among them, so we mark the ChatML per-message expression ourselves. The rendered text is unchanged; only the
assistant mask is added. The assistant's `<|im_end|>` sits inside the markers, so the model learns to stop.
"""

from __future__ import annotations

from workbench.errors import UserError

CHATML_MESSAGE = "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
CHATML_MESSAGE_MARKED = (
    "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}{% generation %}"
    "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}" + CHATML_MESSAGE + "{% endif %}"
)


def has_generation_markers(template: str | None) -> bool:
    return bool(template) and "generation %}" in template


def training_chat_template(template: str | None) -> str | None:
    """The template with assistant turns marked; None when TRL can patch it itself or it already has markers."""
    if template is None or has_generation_markers(template):
        return None
    if CHATML_MESSAGE in template:
        return template.replace(CHATML_MESSAGE, CHATML_MESSAGE_MARKED)
    from trl.chat_template_utils import get_training_chat_template

    class _Holder:  # get_training_chat_template reads `.chat_template` off a processing class
        chat_template = template

    try:
        get_training_chat_template(_Holder())
    except ValueError as error:
        raise UserError(
            "assistant_only_loss needs a chat template with {% generation %} markers and this model's template is "
            "neither ChatML nor one TRL knows; set chat_template_path to a marked template or use "
            "prompt/completion data (completion-only loss)"
        ) from error
    return None
