import json

import pytest

from workbench.rl import AdaptiveKLController, FixedKLController


def test_adaptive_controller_by_hand():
    controller = AdaptiveKLController(init_kl_coef=0.2, target=6.0, horizon=10000)
    # KL 9: error 9/6 - 1 = 0.5, clipped to 0.2; factor 1 + 0.2 * 512 / 10000 = 1.01024; 0.2 * 1.01024 = 0.202048
    controller.update(9.0, n_steps=512)
    assert controller.value == pytest.approx(0.202048, rel=1e-12)
    # KL 5.7: error 5.7/6 - 1 = -0.05, inside the clip; factor 1 - 0.05 * 1000 / 10000 = 0.995
    controller.update(5.7, n_steps=1000)
    assert controller.value == pytest.approx(0.202048 * 0.995, rel=1e-12)


def test_adaptive_controller_clips_below():
    controller = AdaptiveKLController(init_kl_coef=1.0, target=6.0, horizon=100)
    # KL 0: error -1, clipped to -0.2; factor 1 - 0.2 * 100 / 100 = 0.8
    controller.update(0.0, n_steps=100)
    assert controller.value == pytest.approx(0.8, rel=1e-12)


def test_fixed_controller_never_moves():
    controller = FixedKLController(0.05)
    controller.update(100.0, n_steps=512)
    assert controller.value == 0.05


def test_resume_continues_exactly():
    kls = [9.0, 5.7, 1.3, 6.6, 7.1]
    uninterrupted = AdaptiveKLController(0.2, target=6.0, horizon=1000)
    for kl in kls:
        uninterrupted.update(kl, n_steps=64)

    first_half = AdaptiveKLController(0.2, target=6.0, horizon=1000)
    for kl in kls[:2]:
        first_half.update(kl, n_steps=64)
    saved = json.loads(json.dumps(first_half.state_dict()))  # a checkpoint on disk, read back
    resumed = AdaptiveKLController(123.0, target=1.0, horizon=1.0)  # constructor values must not leak through
    resumed.load_state_dict(saved)
    for kl in kls[2:]:
        resumed.update(kl, n_steps=64)
    assert resumed.value == uninterrupted.value  # bit-exact, not approximately
    assert resumed.state_dict() == uninterrupted.state_dict()


def test_fixed_state_round_trip():
    restored = FixedKLController(1.0)
    restored.load_state_dict(FixedKLController(0.03).state_dict())
    assert restored.value == 0.03


def test_state_of_the_other_kind_is_refused():
    with pytest.raises(ValueError, match="adaptive"):
        FixedKLController(0.1).load_state_dict(AdaptiveKLController(0.1, 6.0, 100).state_dict())
    with pytest.raises(ValueError, match="fixed"):
        AdaptiveKLController(0.1, 6.0, 100).load_state_dict(FixedKLController(0.1).state_dict())
