from __future__ import annotations

import pytest
import torch
from torch import Tensor

from mmder.fusion import SETTINGS, fuse, get_setting, rfas_permutation

C, H, W = 3, 8, 6


def _seq(values: list[float], c: int = C, h: int = H, w: int = W) -> Tensor:
    """Frames where frame t is the constant values[t], so the order can be read back."""
    v = torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1)
    return v.expand(-1, c, h, w).clone()


def _frame_values(x: Tensor) -> list[float]:
    flat = x.reshape(x.shape[0], -1)
    assert torch.all(flat == flat[:, :1]), "frames are not constant"
    return [round(float(v), 6) for v in flat[:, 0]]


def _vis(n: int) -> list[float]:
    return [round(0.01 * (i + 1), 6) for i in range(n)]  # 0.01 .. 0.16


def _aud(n: int) -> list[float]:
    return [round(0.5 + 0.01 * (i + 1), 6) for i in range(n)]  # 0.51 .. 0.66


@pytest.mark.parametrize("bad", ["cfas", "Video", "sfas-raw", "", "VAFS"])
def test_unknown_setting_lists_allowed_names(bad: str) -> None:
    with pytest.raises(KeyError) as exc:
        get_setting(bad)
    msg = str(exc.value)
    for name in SETTINGS:
        assert name in msg
    with pytest.raises(KeyError, match="allowed"):
        fuse(bad, _seq(_vis(16)), _seq(_aud(16)))


_VA = ("visual", "audio")


# The paper's settings as a user names them, the frames each input brings (16 for the per-step fusions,
# 8 for the layouts in time) and the inputs each one reads.
@pytest.mark.parametrize(
    ("name", "frames", "reads"),
    [
        ("video", 16, ("visual",)),
        ("audio", 16, ("audio",)),
        ("CFAS", 16, _VA),
        ("SFAS", 16, _VA),
        ("SFAS-raw", 16, _VA),
        ("FFLS", 8, _VA),
        ("FSLF", 8, _VA),
        ("OFOS", 8, _VA),
        ("RFAS", 8, _VA),
    ],
)
def test_each_paper_setting_gives_the_encoder_16_frames_from_its_inputs(
    name: str, frames: int, reads: tuple[str, ...]
) -> None:
    inputs = {"visual": torch.rand(frames, 3, 32, 32), "audio": torch.rand(frames, 3, 32, 32)}
    out = fuse(name, inputs["visual"], inputs["audio"], clip_id="clip", strict=True)
    assert out.shape == (16, 3, 32, 32)
    assert out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # the other sequence length is refused under strict (16 frames into FSLF would give 32)
    other = 8 if frames == 16 else 16
    with pytest.raises(ValueError, match=f"{frames}-step"):
        fuse(name, torch.rand(other, 3, 32, 32), torch.rand(other, 3, 32, 32), strict=True)
    # a corpus without one modality can feed exactly the settings that do not read it
    for mod in ("visual", "audio"):
        without = {**inputs, mod: None}
        if mod in reads:
            with pytest.raises(ValueError, match=mod):
                fuse(name, without["visual"], without["audio"], clip_id="clip", strict=True)
        else:
            assert torch.equal(
                fuse(name, without["visual"], without["audio"], clip_id="clip", strict=True), out
            )


def test_general_sizes() -> None:
    v, a = torch.rand(5, C, H, W), torch.rand(5, C, H, W)
    for name in ("CFAS", "SFAS", "SFAS-raw", "video", "audio"):
        assert fuse(name, v, a).shape == (5, C, H, W)
    for name in ("FFLS", "FSLF", "OFOS", "RFAS"):
        assert fuse(name, v, a).shape == (10, C, H, W)


def test_single_modality_orders_and_none() -> None:
    v, a = _seq(_vis(16)), _seq(_aud(16))
    assert _frame_values(fuse("video", v, None)) == _vis(16)
    assert _frame_values(fuse("audio", None, a)) == _aud(16)
    assert _frame_values(fuse("video", v, a)) == _vis(16)
    with pytest.raises(ValueError, match="visual"):
        fuse("video", None, a)
    with pytest.raises(ValueError, match="audio"):
        fuse("audio", v, None)


def test_ffls_fslf_ofos_orders() -> None:
    v, a = _seq(_vis(8)), _seq(_aud(8))
    vv, aa = _vis(8), _aud(8)
    assert _frame_values(fuse("FFLS", v, a)) == vv + aa
    assert _frame_values(fuse("FSLF", v, a)) == aa + vv
    interleaved = [x for pair in zip(vv, aa, strict=True) for x in pair]
    assert _frame_values(fuse("OFOS", v, a)) == interleaved
    # With tubelet 2, each tubelet (frames 2k, 2k+1) holds one face and one spectrogram.
    out = _frame_values(fuse("OFOS", v, a))
    for k in range(8):
        assert out[2 * k] in vv and out[2 * k + 1] in aa


def test_inputs_not_modified() -> None:
    v, a = _seq(_vis(8)), _seq(_aud(8))
    v0, a0 = v.clone(), a.clone()
    for name in SETTINGS:
        fuse(name, v, a, clip_id="x")
    assert torch.equal(v, v0) and torch.equal(a, a0)


def test_cfas_face_on_top_spectrogram_below() -> None:
    v = torch.ones(16, C, 16, 16)
    a = torch.zeros(16, C, 16, 16)
    out = fuse("CFAS", v, a)
    assert out.shape == (16, C, 16, 16)
    assert torch.allclose(out[:, :, :7], torch.ones(1), atol=1e-6)  # top rows bright (face)
    assert torch.allclose(out[:, :, 9:], torch.zeros(1), atol=1e-6)  # bottom rows dark (spectrogram)
    assert float(out[:, :, 7].mean()) > 0.5 > float(out[:, :, 8].mean())
    # swapped roles: the bright image must then land at the bottom
    out2 = fuse("CFAS", a, v)
    assert torch.allclose(out2[:, :, :7], torch.zeros(1), atol=1e-6)
    assert torch.allclose(out2[:, :, 9:], torch.ones(1), atol=1e-6)


def test_cfas_keeps_frame_pairing() -> None:
    v, a = _seq(_vis(16)), _seq(_aud(16))
    out = fuse("CFAS", v, a)
    # Constant frames stay constant halves: top half ~ V_i, bottom half ~ A_i, for each i.
    for i in range(16):
        assert torch.allclose(out[i, :, : H // 2 - 1], torch.tensor(_vis(16)[i]), atol=1e-5)
        assert torch.allclose(out[i, :, H // 2 + 1 :], torch.tensor(_aud(16)[i]), atol=1e-5)


def test_sfas_mean() -> None:
    v, a = _seq(_vis(16)), _seq(_aud(16))
    out = fuse("SFAS", v, a)
    expected = [(x + y) / 2 for x, y in zip(_vis(16), _aud(16), strict=True)]
    assert _frame_values(out) == pytest.approx(expected, abs=1e-6)
    ones = torch.ones(16, C, H, W)
    assert torch.equal(fuse("SFAS", ones, ones), ones)


def test_sfas_raw_wraps_modulo_256() -> None:
    v = torch.full((16, C, H, W), 200 / 255)
    a = torch.full((16, C, H, W), 100 / 255)
    out = fuse("SFAS-raw", v, a)
    assert torch.allclose(out, torch.full_like(out, 44 / 255), atol=1e-7)
    # no wrap below 256: 100 + 50 -> 150
    small = fuse("SFAS-raw", torch.full((16, C, H, W), 100 / 255), torch.full((16, C, H, W), 50 / 255))
    assert torch.allclose(small, torch.full_like(small, 150 / 255), atol=1e-7)
    # 255 + 1 -> 0
    edge = fuse("SFAS-raw", torch.ones(16, C, H, W), torch.full((16, C, H, W), 1 / 255))
    assert torch.equal(edge, torch.zeros_like(edge))
    # rounding to uint8 first: 0.31 * 255 = 79.05 -> 79, 0.95 * 255 = 242.25 -> 242; 321 mod 256 = 65
    r = fuse("SFAS-raw", torch.full((16, C, H, W), 0.31), torch.full((16, C, H, W), 0.95))
    assert torch.allclose(r, torch.full_like(r, 65 / 255), atol=1e-7)


def test_rfas_permutation_properties() -> None:
    p = rfas_permutation("clip-A", seed=3)
    assert p.dtype == torch.int64
    assert sorted(p.tolist()) == list(range(16))
    assert torch.equal(p, rfas_permutation("clip-A", seed=3))
    assert not torch.equal(p, rfas_permutation("clip-B", seed=3))
    assert not torch.equal(p, rfas_permutation("clip-A", seed=4))
    assert not torch.equal(p, torch.arange(16))
    e0, e1 = rfas_permutation("clip-A", 3, epoch=0), rfas_permutation("clip-A", 3, epoch=1)
    assert not torch.equal(e0, e1)
    assert torch.equal(e1, rfas_permutation("clip-A", 3, epoch=1))
    assert sorted(rfas_permutation("x", 0, n=10).tolist()) == list(range(10))


def test_rfas_many_clips_differ() -> None:
    perms = {tuple(rfas_permutation(f"clip{i}", seed=0).tolist()) for i in range(50)}
    assert len(perms) == 50


def test_rfas_stable_across_processes() -> None:
    # Pinned value (torch 2.11 CPU randperm): the seed comes from SHA-256, not the per-process salted
    # hash(), so any process, worker or rerun gets the same order for the same (seed, clip_id).
    assert rfas_permutation("clip-A", 3).tolist() == [15, 5, 14, 9, 10, 3, 6, 13, 12, 1, 8, 2, 0, 11, 7, 4]


def test_rfas_fuse_frames_once_each() -> None:
    v, a = _seq(_vis(8)), _seq(_aud(8))
    out = _frame_values(fuse("RFAS", v, a, clip_id="c1", seed=7))
    assert sorted(out) == sorted(_vis(8) + _aud(8))
    assert len(set(out)) == 16
    # a shuffle, not the V-then-A layout of FFLS: faces and spectrograms are mixed in time
    assert out != _vis(8) + _aud(8)
    assert 0 < sum(x in _aud(8) for x in out[:8]) < 8
    assert out == _frame_values(fuse("RFAS", v, a, clip_id="c1", seed=7))
    assert out != _frame_values(fuse("RFAS", v, a, clip_id="c2", seed=7))


def test_rfas_epoch_only_with_redraw() -> None:
    v, a = _seq(_vis(8)), _seq(_aud(8))

    def run(**kw: object) -> list[float]:
        return _frame_values(fuse("RFAS", v, a, clip_id="c1", seed=0, **kw))  # type: ignore[arg-type]

    fixed = run()
    assert run(epoch=0) == fixed and run(epoch=5) == fixed  # epoch ignored without redraw
    r0, r1 = run(epoch=0, redraw_each_epoch=True), run(epoch=1, redraw_each_epoch=True)
    assert r0 != r1
    assert r1 == run(epoch=1, redraw_each_epoch=True)
    with pytest.raises(ValueError, match="epoch"):
        run(redraw_each_epoch=True)


@pytest.mark.parametrize("name", ["CFAS", "SFAS", "SFAS-raw", "FFLS", "FSLF", "OFOS", "RFAS"])
def test_bad_shapes(name: str) -> None:
    steps = SETTINGS[name].steps
    good = torch.rand(steps, C, H, W)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        fuse(name, good, torch.rand(steps, C, H, W + 2))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        fuse(name, good, torch.rand(steps, 1, H, W))
    with pytest.raises(ValueError, match="as many visual as audio"):
        fuse(name, good, torch.rand(steps - 1, C, H, W))
    with pytest.raises(ValueError, match=r"\(T, C, H, W\)"):
        fuse(name, good[0], good[0])
    with pytest.raises(ValueError, match="audio"):
        fuse(name, good, None)
    with pytest.raises(ValueError, match="float"):
        fuse(name, good, (good * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="no frames"):
        fuse(name, good[:0], good[:0])


def test_strict_checks_steps() -> None:
    v16, a16 = torch.rand(16, C, H, W), torch.rand(16, C, H, W)
    with pytest.raises(ValueError, match="8-step"):
        fuse("FSLF", v16, a16, strict=True)
    with pytest.raises(ValueError, match="16-step"):
        fuse("CFAS", v16[:8], a16[:8], strict=True)
    assert fuse("FSLF", v16, a16).shape[0] == 32  # non-strict: general sizes allowed
    assert fuse("video", v16, None, strict=True).shape[0] == 16
