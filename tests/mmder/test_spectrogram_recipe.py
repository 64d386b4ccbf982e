"""Issue 10's pieces: spectrogram representations, spectrogram augmentation, named presets, the
speaker-disjoint validation split and model selection on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from blob_clips import Blobs
from pydantic import ValidationError

from mmder.config import TrainingConfig, result_fields
from mmder.data.features import deltas, spectrogram_image, spectrogram_images, window_bounds
from mmder.data.folds import validation_split
from mmder.data.preprocess import PreprocessConfig
from mmder.presets import TRAINING_PRESETS, expand_training_preset, lr_rule, scaled_lr
from mmder.train.augment import SpecAugment

SR = 16000


def _tone_clip(seconds: float = 1.7) -> np.ndarray:
    """A tone that is quiet in the first half and loud in the second."""
    t = np.arange(int(seconds * SR)) / SR
    x = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    x[: x.size // 2] *= 0.05
    return x + 1e-3 * np.random.default_rng(0).standard_normal(x.size).astype(np.float32)


# --- representations -------------------------------------------------------------------------------


def test_new_preprocess_fields_keep_old_cache_keys_and_change_them_when_used():
    base = PreprocessConfig(image_size=64)
    assert PreprocessConfig(image_size=64, spectrogram_norm="image").fingerprint() == base.fingerprint()
    assert PreprocessConfig(image_size=64, spectrogram_norm="clip").fingerprint() != base.fingerprint()
    assert PreprocessConfig(image_size=64, spectrogram_channels="deltas").fingerprint() != base.fingerprint()


def test_clip_normalisation_keeps_loud_windows_brighter_than_quiet_ones():
    x = _tone_clip()
    bounds = window_bounds(x.size, 16)
    clip = spectrogram_images(x, SR, bounds, kind="logmel", size=32, n_mels=32, norm="clip")
    image = spectrogram_images(x, SR, bounds, kind="logmel", size=32, n_mels=32, norm="image")
    assert clip.shape == (16, 32, 32, 3) and clip.dtype == np.uint8
    assert clip[-1].mean() > clip[0].mean() + 20  # the loud end stays brighter
    # per-image min-max scaling (the paper) makes the quiet and loud windows look alike
    assert abs(float(image[-1].mean()) - float(image[0].mean())) < abs(
        float(clip[-1].mean()) - float(clip[0].mean())
    )


def test_image_norm_with_a_colormap_draws_what_spectrogram_image_draws():
    x = _tone_clip()
    bounds = window_bounds(x.size, 8)
    together = spectrogram_images(x, SR, bounds, kind="mfcc", size=32, colormap="viridis", norm="image")
    one_by_one = np.stack(
        [spectrogram_image(x[a:b], SR, kind="mfcc", size=32, normalize=False) for a, b in bounds]
    )
    np.testing.assert_array_equal(together, one_by_one)


def test_deltas_fill_the_three_channels_with_matrix_delta_and_delta_delta():
    ramp = np.tile(np.arange(10, dtype=np.float32)[:, None], (1, 3))  # rises by 1 per frame
    np.testing.assert_allclose(deltas(ramp)[2:-2], 1.0)
    x = _tone_clip()
    out = spectrogram_images(x, SR, window_bounds(x.size, 16), kind="logmel", size=32, channels="deltas")
    assert out.shape == (16, 32, 32, 3)
    assert not np.array_equal(out[..., 0], out[..., 1])  # not a grey image


def test_clip_band_standardises_each_band_over_the_clip():
    x = _tone_clip()
    out = spectrogram_images(
        x, SR, window_bounds(x.size, 16), kind="logmel", size=64, n_mels=64, norm="clip_band"
    )
    rows = out[..., 0].astype(np.float64).mean(axis=(0, 2))  # per band over all windows
    assert np.all(np.abs(rows - 127.5) < 40)  # every band centred, whatever its energy


# --- augmentation ------------------------------------------------------------------------------------


def test_spec_augment_masks_bands_and_spans_and_is_reproducible():
    x = torch.ones(2, 3, 16, 32, 32)
    aug = SpecAugment(freq_mask=0.25, time_mask=0.25, masks=2, seed=1)
    a = aug(x)
    aug.reseed(1)
    b = aug(x)
    assert torch.equal(a, b) and torch.equal(x, torch.ones_like(x))  # same seed, input untouched
    assert (a == 0).any() and (a == 1).any()
    # a frequency band is hidden in every window and channel alike
    full_rows = (a[0] == 0).all(dim=(0, 1, 3))
    assert full_rows.any() or (a[0] == 0).any(dim=(0, 2)).any()


def test_time_shift_repeats_the_edge_window_and_gain_offsets_everything():
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 16, 1, 1).expand(1, 1, 16, 2, 2).clone()
    out = SpecAugment(time_shift=3, seed=0)(x)
    seq = out[0, 0, :, 0, 0]
    assert set(torch.diff(seq).tolist()) <= {0.0, 1.0}  # order kept, an edge repeated
    assert seq.min() >= 0 and seq.max() <= 15
    g = SpecAugment(gain=0.5, seed=0)(torch.zeros(3, 1, 2, 2, 2))
    assert all(len(torch.unique(c)) == 1 for c in g) and g.abs().max() <= 0.5


def test_shift_windows_moves_the_sequence_and_repeats_the_edge_window():
    from mmder.train.augment import shift_windows

    x = torch.arange(6, dtype=torch.float32).view(1, 1, 6, 1, 1).expand(2, 3, 6, 2, 2)
    assert shift_windows(x, 2)[0, 0, :, 0, 0].tolist() == [0, 0, 0, 1, 2, 3]  # starts later
    assert shift_windows(x, -2)[1, 2, :, 1, 1].tolist() == [2, 3, 4, 5, 5, 5]  # ends earlier
    assert torch.equal(shift_windows(x[0], 1), shift_windows(x, 1)[0])  # one clip or a batch
    assert torch.equal(shift_windows(x, 0), x)


@pytest.mark.slow
def test_evaluation_averages_the_probabilities_over_shifted_clips():
    # tta_shifts: k evaluates each clip shifted by -k..k windows and averages the class probabilities
    from mmder.models.classifier import build_model
    from mmder.train.augment import shift_windows
    from mmder.train.engine import build_engine, ensure_process_group
    from mmder.train.loop import evaluate

    ensure_process_group()
    torch.manual_seed(0)
    cfg = TrainingConfig(batch_size=8, eval_batch_size=16, lr=1e-3, warmup_epochs=0)
    m = build_model("micro", 2, image_size=16, num_frames=4)
    torch.nn.init.normal_(m.head.weight, std=1.0)  # a zero-initialised head says 50/50 to every clip
    engine, _, _ = build_engine(m, cfg, 1)
    clips = Blobs(16, 1)
    x = torch.stack([clips[i][0] for i in range(len(clips))])
    engine.eval()
    with torch.no_grad():
        probs = torch.stack([engine(shift_windows(x, s)).softmax(1) for s in (-1, 0, 1)]).mean(0)
    one = evaluate(engine, clips, cfg, 2)
    tta = evaluate(engine, clips, cfg.model_copy(update={"tta_shifts": 1}), 2)
    expected_loss = torch.nn.functional.nll_loss(probs.log(), clips.y).item()
    assert tta["test_loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert [p for _, _, p in tta["predictions"]] == probs.argmax(1).tolist()
    assert one["test_loss"] != pytest.approx(tta["test_loss"], rel=1e-5)  # the shifts changed something
    with pytest.raises(ValidationError, match="tta_shifts"):
        TrainingConfig(recipe="linear_probe", tta_shifts=1)


def test_spectrogram_augmentation_is_off_by_default_and_refused_by_the_probe():
    assert not TrainingConfig().augments_spectrograms
    with pytest.raises(ValidationError, match="linear_probe has no augmentation"):
        TrainingConfig(recipe="linear_probe", spec_freq_mask=0.1)


def test_new_training_fields_stay_out_of_cell_keys_until_used():
    plain = result_fields(TrainingConfig())
    assert "spec_freq_mask" not in plain and "validation_speakers" not in plain and "preset" not in plain
    assert result_fields(TrainingConfig(spec_freq_mask=0.1))["spec_freq_mask"] == 0.1


# --- presets -----------------------------------------------------------------------------------------


def test_presets_fill_unset_fields_and_scale_the_lr_by_the_global_batch():
    t = TrainingConfig(preset="videomae-finetune", batch_size=8)
    assert t.lr == pytest.approx(scaled_lr(5e-4, 8)) and t.mixup == 0.8 and t.layer_decay == 0.7
    assert "base 0.0005 x global batch 8 / 256" in lr_rule(t, 1)
    explicit = TrainingConfig(preset="videomae-finetune", lr=1e-3, epochs=3)
    assert explicit.lr == 1e-3 and explicit.epochs == 3
    assert "set explicitly" in lr_rule(explicit, 1)
    probe = TrainingConfig(preset="authors-probe")
    assert probe.recipe == "linear_probe" and probe.lr == 1e-2
    assert expand_training_preset({"preset": "small-from-scratch"}, world_size=2)["lr"] == pytest.approx(
        scaled_lr(TRAINING_PRESETS["small-from-scratch"]["base_lr"], 32)
    )
    # after MAE the small recipe differs from the from-scratch one only by layer decay
    scratch, mae = TrainingConfig(preset="small-from-scratch"), TrainingConfig(preset="small-mae-finetune")
    assert (scratch.layer_decay, mae.layer_decay) == (1.0, 0.75)
    differing = {k for k, v in mae.model_dump().items() if scratch.model_dump()[k] != v}
    assert differing == {"layer_decay", "preset"}
    # the worker validates the expanded section back: nothing changes
    assert TrainingConfig.model_validate(t.model_dump(mode="json")) == t
    with pytest.raises(ValidationError, match="allowed: authors-probe"):
        TrainingConfig(preset="nope")


def test_experiment_preset_scales_by_workers_and_fills_the_model_section():
    from harness.experiment.config import ExperimentConfig

    spec = ExperimentConfig.model_validate(
        {
            "name": "x",
            "datasets": [{"corpus": "synthetic", "root": "/tmp/nowhere"}],
            "training": {"preset": "videomae-finetune", "batch_size": 4},
            "resources": {"num_workers": 4},
            "model": {"size": "micro", "head_dropout": 0.1},
        }
    )
    assert spec.training.lr == pytest.approx(5e-4 * 16 / 256)
    assert spec.model.drop_path == 0.2 and spec.model.head_dropout == 0.1  # explicit value wins
    assert "global batch 16" in lr_rule(spec.training, 4)


# --- validation split and selection -----------------------------------------------------------------


def test_validation_split_is_speaker_disjoint_deterministic_and_keeps_both_sexes():
    speakers = [f"Actor_{a:02d}" for a in range(5, 13) for _ in range(3)]
    rows = np.arange(len(speakers))
    train, val = validation_split(speakers, rows, 2, seed=0)
    vs, ts = {speakers[i] for i in val}, {speakers[i] for i in train}
    assert len(vs) == 2 and not vs & ts and len(train) + len(val) == len(rows)
    assert {int(s[-2:]) % 2 for s in vs} == {0, 1}  # one odd (male), one even (female) actor
    again = validation_split(speakers, rows, 2, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((train, val), again, strict=True))
    _, share = validation_split(speakers, rows, 0.25, seed=3)
    assert len({speakers[i] for i in share}) == 2
    with pytest.raises(ValueError, match="at least one must stay"):
        validation_split(speakers, rows, 8)


@pytest.mark.slow
def test_fit_reports_the_test_metrics_of_the_epoch_chosen_on_validation():
    from mmder.models.classifier import build_model
    from mmder.train.loop import fit

    torch.manual_seed(0)
    m = build_model("micro", 2, image_size=16, num_frames=4)
    cfg = TrainingConfig(epochs=3, batch_size=8, lr=3e-3, warmup_epochs=0, spec_freq_mask=0.2, time_shift=1)
    seen = []
    out = fit(m, Blobs(32, 0), Blobs(16, 1), 2, cfg, report=lambda r, d: seen.append(r), val_set=Blobs(16, 2))
    assert all(r.val_war is not None for r in seen)
    best = max(seen, key=lambda r: (r.val_uar, r.val_war, r.epoch))
    assert out.selected_epoch == best.epoch and out.war == best.war and out.val_uar == best.val_uar


def test_random_mask_hides_the_same_count_anywhere_and_the_config_chooses_it():
    from mmder.config import PretrainConfig
    from mmder.models.mae import build_pretrainer, random_mask

    m = random_mask(4, 32, 0.75, generator=torch.Generator().manual_seed(0))
    assert m.shape == (4, 32) and (m.sum(1) == 24).all()
    mae = build_pretrainer("micro", image_size=32, num_frames=16)
    tube = mae.make_mask(2, 0.75).view(2, mae.num_frames_tokens, -1)
    assert (tube == tube[:, :1]).all()  # the same spatial mask in every time slice
    rnd = mae.make_mask(64, 0.75, kind="random").view(64, mae.num_frames_tokens, -1)
    assert not (rnd == rnd[:, :1]).all()
    assert PretrainConfig().masking == "tube" and "masking" not in result_fields(PretrainConfig())


def test_frequency_warp_moves_content_up_or_down_from_the_lowest_band():
    from mmder.train.augment import warp_frequency

    bottom_up = torch.arange(8, dtype=torch.float32)  # value = height above the bottom row
    img = bottom_up.flip(0).view(8, 1).expand(8, 3)  # row 0 is the top (highest band)
    assert torch.equal(warp_frequency(img, 1.0), img)
    stretched = warp_frequency(img, 2.0)[:, 0].flip(0)
    assert torch.allclose(stretched, bottom_up / 2)  # height h shows what was at h / 2
    assert SpecAugment(freq_warp=0.1).active and TrainingConfig(freq_warp=0.1).augments_spectrograms
