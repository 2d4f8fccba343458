# GPU image for the workbench stages: docker build -t alignment-workbench . && docker run --gpus all alignment-workbench sft --config ...
# The base carries CUDA PyTorch 2.11 (the lower bound of our tested range); pip keeps it because it satisfies torch>=2.11.
FROM pytorch/pytorch:2.11.0-cuda12.8-cudnn9-runtime

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WORKBENCH_HOME=/data/workbench \
    HF_HOME=/data/hf

# redis-server: the embedded Argilla's queue (workbench label serve); git: code versions in adapter manifests.
RUN apt-get update && apt-get install -y --no-install-recommends redis-server git && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/workbench
COPY pyproject.toml README.md ./
COPY workbench ./workbench
COPY labeling ./labeling
COPY recipes ./recipes
RUN pip install -e . && python -c "import torch, bitsandbytes, trl, peft; print(torch.__version__, torch.version.cuda)"

VOLUME ["/data"]
WORKDIR /work
ENTRYPOINT ["workbench"]
CMD ["--help"]
