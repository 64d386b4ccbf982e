"""A small, seeded, *real-media* audio-visual corpus whose classes need both modalities.

Why: the real corpora are not shipped with the project, and a pipeline test is only meaningful when
the labels are learnable from the media the pipeline decodes. :func:`generate_corpus` writes one
``.mp4`` (OpenCV, ``mp4v``) and one 16-bit mono ``.wav`` per clip, plus ``manifest.csv`` and
``synthetic.json``; the ``synthetic`` corpus adapter (:mod:`mmder.data.corpora`) reads them.

Design
------
Six classes = 3 visual groups x 2 audio groups, ``label_index = 2 * visual_group + audio_group``:

=========  ============  ===========  ==================================================
index      name          visual       audio
=========  ============  ===========  ==================================================
0 / 1      frown-oo/ee   0 "frown"    0 "oo" / 1 "ee"
2 / 3      smile-oo/ee   1 "smile"    0 "oo" / 1 "ee"
4 / 5      open-oo/ee    2 "open"     0 "oo" / 1 "ee"
=========  ============  ===========  ==================================================

* Visual cue (the face): *frown* = thick down-turned mouth arc, brows slanted down towards the
  nose, narrowed eyes; *smile* = wide up-turned open mouth with a white band of teeth, squinted
  eyes; *open* = a large dark open-mouth ellipse, brows raised high, wide eyes. All are big,
  high-contrast shapes (dark on skin, white teeth), legible at 64x64 and at 64x32 (CFAS squeezes
  the face to half height). The
  expression ramps up from a neutral face (a short closed mouth, level brows) after an onset in the
  first 0-18 % of the clip and may relax over the last 0-15 %, so most uniformly sampled frames show
  it. The face alone tells the visual group, i.e. one of 3 class pairs: a visual-only model tops out
  at 50 %.
* Audio cue (the sound): a voiced vowel, a harmonic source at the speaker's pitch (with a contour,
  vibrato and syllable-rate loudness modulation) shaped by the formants of /u/ ("oo": energy below
  1 kHz) or /i/ ("ee": strong F2-F4 between 2.1 and 4 kHz), plus a little aspiration noise with the same
  envelope. The spectral envelope shows in the low MFCCs of every window whatever the pitch, and the
  drawn MFCC image drops c0, so loudness does not matter. Voicing starts within 0.03-0.15 s, ends
  0.03-0.15 s before the end and has 0-2 short pauses (40-80 ms), so every 2/17 window is mostly
  voiced. The sound alone tells the audio group (which half of the classes): audio-only tops out at
  33 %. Both together give the class.
* Nuisance that makes speaker-independent folds mean something: each speaker has a background
  colour, skin tone, hair colour, face width/height, eye spacing and mouth position of their own, a
  pitch (95-140 Hz for odd-numbered, 175-240 Hz for even-numbered speakers), a formant scale
  (0.92-1.10) and a loudness; each clip draws a position offset
  (+-4 px at 96 px) with a slow per-frame drift, an expression strength (0.7-1), blinks, a brightness
  factor, an amplitude, the voicing timings and a pitch contour. None of this depends on the class.

Everything is drawn from ``numpy.random.default_rng`` seeded by ``(seed, speaker, class, repeat)``,
so a clip does not depend on how many others are generated. ``clips_per_class`` counts clips of each
class *per speaker*: the corpus holds ``6 * clips_per_class * speakers`` clips, speakers ``spk01``,
``spk02``, ... Measured on the prepared 64x64 cache (leave-one-speaker-out logistic regression on
time-averaged, grayscale, per-clip standardised 12x12 images): visual group ~0.98-1.0, audio group
1.0, while faces say nothing of the audio group (~0.45) and sounds nothing of the visual (~0.3).
"""

from __future__ import annotations

import csv
import json
import os
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "CLASSES",
    "VISUAL_GROUPS",
    "AUDIO_GROUPS",
    "SYNTHETIC_VERSION",
    "MANIFEST_COLUMNS",
    "generate_corpus",
    "class_index",
]

VISUAL_GROUPS: tuple[str, ...] = ("frown", "smile", "open")
AUDIO_GROUPS: tuple[str, ...] = ("oo", "ee")
CLASSES: tuple[str, ...] = tuple(f"{v}-{a}" for v in VISUAL_GROUPS for a in AUDIO_GROUPS)
MANIFEST_COLUMNS: tuple[str, ...] = (
    "clip_id",
    "speaker",
    "label",
    "visual_group",
    "audio_group",
    "video",
    "audio",
)
# Bump when the drawing or the synthesis changes: an old corpus is then regenerated.
SYNTHETIC_VERSION = 2

# (frequency Hz, bandwidth Hz, gain) of the formants of each audio group.
_FORMANTS: dict[int, tuple[tuple[float, float, float], ...]] = {
    0: ((320.0, 70.0, 1.0), (800.0, 90.0, 0.7), (2400.0, 160.0, 0.04)),  # /u/ "oo"
    1: ((280.0, 70.0, 0.6), (2300.0, 120.0, 1.0), (3000.0, 160.0, 0.9), (3600.0, 200.0, 0.5)),  # /i/ "ee"
}


def class_index(visual_group: int, audio_group: int) -> int:
    """The label index of a (visual group, audio group) pair."""
    return visual_group * len(AUDIO_GROUPS) + audio_group


@dataclass(frozen=True)
class _Params:
    clips_per_class: int
    speakers: int
    seed: int
    frame_size: int
    fps: int
    duration_s: float
    sample_rate: int
    version: int = SYNTHETIC_VERSION

    @property
    def n_frames(self) -> int:
        return max(1, int(round(self.duration_s * self.fps)))

    @property
    def n_samples(self) -> int:
        return int(round(self.duration_s * self.sample_rate))


@dataclass(frozen=True)
class _Speaker:
    background: tuple[float, float, float]  # RGB 0..255
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    face_rx: float  # in units of the frame size
    face_ry: float
    eye_dx: float
    mouth_y: float
    f0: float
    formant_scale: float
    loudness: float


def _speaker(seed: int, s: int) -> _Speaker:
    rng = np.random.default_rng([seed, s, 7919])
    skins = [(240, 208, 184), (226, 184, 154), (208, 162, 126), (188, 142, 106), (168, 122, 90)]
    skin = np.array(skins[(s + int(rng.integers(len(skins)))) % len(skins)], dtype=float)
    skin = np.clip(skin + rng.normal(0, 6, 3), 0, 255)
    bg_hue = (np.random.default_rng([seed, 7919]).uniform(0, 180) + s * 111.2) % 180  # spread hues
    bg = cv2.cvtColor(np.uint8([[[bg_hue, rng.uniform(60, 160), rng.uniform(90, 200)]]]), cv2.COLOR_HSV2RGB)
    hair = np.array([rng.uniform(10, 90), rng.uniform(5, 60), rng.uniform(0, 40)])
    # Alternate low and high voices so folds of contiguous speakers see both.
    low = s % 2 == 0
    f0 = rng.uniform(95, 140) if low else rng.uniform(175, 240)
    fscale = rng.uniform(0.92, 1.0) if low else rng.uniform(1.0, 1.10)
    return _Speaker(
        background=tuple(float(c) for c in bg[0, 0]),
        skin=tuple(float(c) for c in skin),
        hair=tuple(float(c) for c in hair),
        face_rx=rng.uniform(0.31, 0.36),
        face_ry=rng.uniform(0.37, 0.41),
        eye_dx=rng.uniform(0.12, 0.15),
        mouth_y=rng.uniform(0.20, 0.24),
        f0=float(f0),
        formant_scale=float(fscale),
        loudness=rng.uniform(0.35, 0.9),
    )


# --------------------------------------------------------------------------------------------------
# video
# --------------------------------------------------------------------------------------------------

_SHIFT = 4  # cv2 sub-pixel bits
_ONE = 1 << _SHIFT


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x * _ONE)), int(round(y * _ONE))


def _ellipse(img, c, axes, color, thickness=-1, angle=0.0, start=0.0, end=360.0) -> None:
    cv2.ellipse(
        img,
        _pt(*c),
        (max(1, int(round(axes[0] * _ONE))), max(1, int(round(axes[1] * _ONE)))),
        angle,
        start,
        end,
        color,
        thickness,
        cv2.LINE_AA,
        _SHIFT,
    )


def _polyline(img, pts, color, thickness, closed=False, fill=False) -> None:
    arr = np.array([_pt(x, y) for x, y in pts], dtype=np.int32).reshape(-1, 1, 2)
    if fill:
        cv2.fillPoly(img, [arr], color, cv2.LINE_AA, _SHIFT)
    else:
        cv2.polylines(img, [arr], closed, color, max(1, int(round(thickness))), cv2.LINE_AA, _SHIFT)


def _expression_curve(n: int, rng: np.random.Generator) -> np.ndarray:
    """Per-frame expression intensity in [0, 1]: neutral, ramp up, hold, maybe relax."""
    t = (np.arange(n) + 0.5) / n
    onset = rng.uniform(0.0, 0.18)
    relax = rng.uniform(0.85, 1.0)
    ramp = rng.uniform(0.04, 0.08)
    peak = rng.uniform(0.7, 1.0)
    up = np.clip((t - onset) / ramp, 0, 1)
    down = 1.0 - 0.5 * np.clip((t - relax) / max(1e-6, 1.0 - relax), 0, 1)  # relaxes to half
    return peak * up * down


def _draw_face(
    size: int,
    spk: _Speaker,
    group: int,
    e: float,
    cx: float,
    cy: float,
    scale: float,
    blink: bool,
) -> np.ndarray:
    """One RGB frame: the speaker's face showing expression ``group`` at intensity ``e``."""
    F = size * scale
    img = np.empty((size, size, 3), np.uint8)
    img[:] = np.array(spk.background, np.uint8)
    skin = tuple(float(c) for c in spk.skin)
    hair = tuple(float(c) for c in spk.hair)
    dark = (25.0, 12.0, 12.0)
    rx, ry = spk.face_rx * F, spk.face_ry * F
    # hair behind the head, head, ears
    _ellipse(img, (cx, cy - 0.06 * F), (rx * 1.08, ry * 0.98), hair)
    _ellipse(img, (cx - rx, cy), (0.05 * F, 0.08 * F), skin)
    _ellipse(img, (cx + rx, cy), (0.05 * F, 0.08 * F), skin)
    _ellipse(img, (cx, cy + 0.02 * F), (rx, ry), skin)
    _ellipse(img, (cx, cy - ry * 0.78), (rx * 0.92, ry * 0.32), hair, start=180, end=360)

    eye_y = cy - 0.07 * F
    # eyes: openness depends on the expression
    open_eye = {0: 1.0 - 0.45 * e, 1: 1.0 - 0.35 * e, 2: 1.0 + 0.55 * e}[group]
    if blink:
        open_eye = 0.12
    for side in (-1, 1):
        ex = cx + side * spk.eye_dx * F
        _ellipse(img, (ex, eye_y), (0.055 * F, 0.032 * F * open_eye), (245.0, 245.0, 245.0))
        if open_eye > 0.3:
            _ellipse(img, (ex, eye_y), (0.022 * F, min(0.022, 0.03 * open_eye) * F), dark)

    # brows: (raise, inner-end drop) in units of F
    raise_, tilt = {0: (-0.015 * e, 0.05 * e), 1: (0.005 * e, -0.01 * e), 2: (0.07 * e, -0.015 * e)}[group]
    brow_y = eye_y - 0.075 * F - raise_ * F
    for side in (-1, 1):
        ex = cx + side * spk.eye_dx * F
        inner = (ex - side * 0.06 * F, brow_y + tilt * F)
        outer = (ex + side * 0.06 * F, brow_y - (0.015 * F if group == 2 else 0.0) * e)
        mid = (ex, brow_y - (0.025 * F * e if group == 2 else 0.0))
        brow = 0.045 + (0.05 * e if group == 0 else 0.0)  # frowning brows: heavy and low
        _polyline(img, [inner, mid, outer], hair, thickness=max(2.0, brow * F))

    # mouth
    my = cy + spk.mouth_y * F
    lip = (150.0, 40.0, 45.0)
    if group == 0:  # frown: corners down, a thick dark arc
        w, k, o = 0.28 + 0.10 * e, -0.16 * e, 0.0
    elif group == 1:  # smile: corners up, wide open with a broad white band of teeth
        w, k, o = 0.30 + 0.22 * e, 0.10 * e, 0.22 * e
    else:  # open: a tall dark ellipse
        w, k, o = 0.26 - 0.04 * e, 0.0, 0.36 * e
    w *= F
    k *= F
    o *= F
    xs = np.linspace(-w / 2, w / 2, 15)
    centre = my - k * (2 * xs / w) ** 2 + k * 0.5  # corners move by k, centre by -k/2
    if o < 0.02 * F:
        thick = 0.05 + (0.05 * e if group == 0 else 0.0)
        _polyline(img, list(zip(cx + xs, centre, strict=True)), dark, thickness=max(2.0, thick * F))
    elif group == 1:
        lower = centre + o * (1 - (2 * xs / w) ** 2)
        poly = list(zip(cx + xs, centre, strict=True)) + list(zip(cx + xs[::-1], lower[::-1], strict=True))
        _polyline(img, poly, dark, 0, fill=True)
        teeth = centre + 0.75 * o * (1 - (2 * xs / w) ** 2)
        poly_t = list(zip(cx + xs, centre, strict=True)) + list(zip(cx + xs[::-1], teeth[::-1], strict=True))
        _polyline(img, poly_t, (250.0, 250.0, 245.0), 0, fill=True)
        _polyline(img, list(zip(cx + xs, centre, strict=True)), lip, thickness=max(1.0, 0.02 * F))
    else:
        _ellipse(img, (cx, my + o * 0.15), (w / 2, o / 2 + 0.02 * F), lip)
        _ellipse(img, (cx, my + o * 0.15), (w / 2 * 0.8, o / 2), dark)
    return img


def _make_video(path: Path, spk: _Speaker, group: int, n: int, p: _Params, rng) -> None:
    size = p.frame_size
    expr = _expression_curve(n, rng)
    off = rng.uniform(-4, 4, 2) * size / 96
    drift = np.cumsum(rng.normal(0, 0.25, (n, 2)), axis=0) * size / 96
    drift = np.clip(drift, -2 * size / 96, 2 * size / 96)
    scale = rng.uniform(0.95, 1.05)
    gain = rng.uniform(0.88, 1.12)
    blinks = set()
    for _ in range(int(rng.integers(0, 3))):
        b = int(rng.integers(0, n))
        blinks.update({b, b + 1})
    noise_rng = np.random.default_rng(rng.integers(2**32))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(p.fps), (size, size))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write mp4v video to {path}")
    try:
        for i in range(n):
            cx = size / 2 + off[0] + drift[i, 0]
            cy = size / 2 + off[1] + drift[i, 1] + 0.03 * size
            frame = _draw_face(size, spk, group, float(expr[i]), cx, cy, scale, i in blinks)
            f = frame.astype(np.float32) * gain + noise_rng.normal(0, 2.0, frame.shape)
            writer.write(cv2.cvtColor(np.clip(f, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


# --------------------------------------------------------------------------------------------------
# audio
# --------------------------------------------------------------------------------------------------


def _envelope(f: np.ndarray, group: int, fscale: float) -> np.ndarray:
    """Spectral envelope (linear amplitude) of the vowel at frequencies ``f`` (Hz)."""
    amp = np.full_like(f, 0.003)
    for fc, bw, g in _FORMANTS[group]:
        fc *= fscale
        amp += g / (1.0 + ((f - fc) / (bw / 2.0)) ** 2)
    tilt = 1.0 / np.sqrt(1.0 + (f / 400.0) ** 2)  # glottal roll-off (-6 dB/oct above 400 Hz)
    return amp * tilt * (f < 7600.0)


def _voicing_gate(n: int, sr: int, rng) -> np.ndarray:
    """0/1 gate with smooth 10 ms edges: late onset, early offset and a few short pauses."""
    g = np.zeros(n, np.float32)
    start = int(rng.uniform(0.03, 0.15) * sr)
    end = n - int(rng.uniform(0.03, 0.15) * sr)
    g[start:end] = 1.0
    for _ in range(int(rng.integers(0, 3))):
        c = int(rng.uniform(0.25, 0.85) * n)
        half = int(rng.uniform(0.02, 0.04) * sr)
        g[max(0, c - half) : c + half] = 0.0
    k = max(1, int(0.01 * sr))
    win = np.hanning(2 * k + 1).astype(np.float32)
    return np.convolve(g, win / win.sum(), mode="same")


def _make_audio(spk: _Speaker, group: int, n: int, sr: int, rng) -> np.ndarray:
    t = np.arange(n) / sr
    dur = n / sr
    f0 = spk.f0 * (
        1.0
        + rng.uniform(-0.12, 0.12) * (t - dur / 2) / dur
        + 0.02 * np.sin(2 * np.pi * rng.uniform(4.5, 6.0) * t + rng.uniform(0, 6.3))
    )
    phase = 2 * np.pi * np.cumsum(f0) / sr
    fscale = spk.formant_scale * rng.uniform(0.97, 1.03)
    k_max = int(7600 // (spk.f0 * 0.85))
    # harmonic amplitudes follow the envelope at k * f0(t), evaluated every 5 ms and interpolated
    hop = max(1, sr // 200)
    tc = np.arange(0, n + hop, hop)
    f0c = np.interp(tc, np.arange(n), f0)
    ks = np.arange(1, k_max + 1)[:, None]
    amps = _envelope(ks * f0c[None, :], group, fscale)  # (K, n_control)
    offsets = rng.uniform(0, 2 * np.pi, k_max)
    sig = np.zeros(n, np.float64)
    for k in range(1, k_max + 1):
        sig += np.interp(np.arange(n), tc, amps[k - 1]) * np.sin(k * phase + offsets[k - 1])
    # aspiration noise with the same (static) envelope
    noise = rng.normal(0, 1, n)
    spec = np.fft.rfft(noise) * _envelope(np.fft.rfftfreq(n, 1 / sr), group, fscale)
    asp = np.fft.irfft(spec, n)
    sig = sig / (np.abs(sig).max() + 1e-9) + 0.08 * asp / (np.abs(asp).max() + 1e-9)
    syll = 1.0 - 0.35 * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6.3)))
    out = sig * syll * _voicing_gate(n, sr, rng)
    out = out / (np.abs(out).max() + 1e-9) * spk.loudness * rng.uniform(0.6, 1.0)
    out += rng.normal(0, 10 ** (-55 / 20), n)  # room noise floor, so pauses are not digital zero
    return np.clip(out, -1, 1).astype(np.float32)


def _write_wav(path: Path, x: np.ndarray, sr: int) -> None:
    pcm = np.round(np.clip(x, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())


# --------------------------------------------------------------------------------------------------
# corpus
# --------------------------------------------------------------------------------------------------


def _speaker_name(s: int) -> str:
    return f"spk{s + 1:02d}"


def _is_complete(out: Path, params: _Params) -> bool:
    meta_path = out / "synthetic.json"
    manifest = out / "manifest.csv"
    if not meta_path.is_file() or not manifest.is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return False
    if meta.get("params") != asdict(params):
        return False
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if len(rows) != meta.get("n_clips"):
        return False
    for r in rows:
        for col in ("video", "audio"):
            p = out / r[col]
            if not p.is_file() or p.stat().st_size == 0:
                return False
    return True


def _remove_previous(out: Path) -> None:
    """Delete the media an older manifest in ``out`` lists (only those: nothing else is touched)."""
    manifest = out / "manifest.csv"
    if not manifest.is_file():
        return
    with manifest.open(newline="") as fh:
        for r in csv.DictReader(fh):
            for col in ("video", "audio"):
                rel = Path(r.get(col) or "")
                if rel.parts and rel.parts[0] in ("video", "audio") and not rel.is_absolute():
                    (out / rel).unlink(missing_ok=True)
    manifest.unlink()


def generate_corpus(
    out_dir: str | os.PathLike,
    *,
    clips_per_class: int = 12,
    speakers: int = 4,
    seed: int = 0,
    frame_size: int = 96,
    fps: int = 25,
    duration_s: float = 2.4,
    sample_rate: int = 16000,
) -> Path:
    """Write the synthetic corpus into ``out_dir`` (see the module docstring) and return its path.

    Idempotent: when ``out_dir`` already holds a complete corpus made with the same parameters, it
    returns at once. ``synthetic.json`` is written last, so an interrupted run is redone.
    """
    if clips_per_class < 1 or speakers < 1:
        raise ValueError("clips_per_class and speakers must be at least 1")
    if frame_size < 32:
        raise ValueError(f"frame_size must be at least 32, got {frame_size}")
    if duration_s <= 0.5:
        raise ValueError(f"duration_s must exceed 0.5 s, got {duration_s}")
    params = _Params(clips_per_class, speakers, seed, frame_size, fps, float(duration_s), sample_rate)
    out = Path(out_dir).resolve()
    if _is_complete(out, params):
        return out
    # Two sweeps started at once on a fresh output both generated here and one crashed renaming a
    # manifest the other had already moved; the lock makes the second wait and then find it complete.
    from filelock import FileLock

    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out.parent / f".{out.name}.lock")):
        if not _is_complete(out, params):
            _write_corpus(out, params)
    return out


PARALLEL_FROM_CLIPS = 96  # smaller corpora are written in this process: a pool's start costs more


def _write_speaker(out: Path, params: _Params, s: int) -> list[dict[str, object]]:
    """Write one speaker's clips; returns their manifest rows, in the corpus's order."""
    seed, clips_per_class = params.seed, params.clips_per_class
    n_frames, n_samples = params.n_frames, params.n_samples
    spk = _speaker(seed, s)
    rows: list[dict[str, object]] = []
    for vg in range(len(VISUAL_GROUPS)):
        for ag in range(len(AUDIO_GROUPS)):
            ci = class_index(vg, ag)
            for rep in range(clips_per_class):
                rng = np.random.default_rng([seed, s, ci, rep])
                clip_id = f"{_speaker_name(s)}_{CLASSES[ci]}_{rep:02d}"
                video = Path("video") / f"{clip_id}.mp4"
                audio = Path("audio") / f"{clip_id}.wav"
                _make_video(out / video, spk, vg, n_frames, params, rng)
                audio_wave = _make_audio(spk, ag, n_samples, params.sample_rate, rng)
                _write_wav(out / audio, audio_wave, params.sample_rate)
                rows.append(
                    {
                        "clip_id": clip_id,
                        "speaker": _speaker_name(s),
                        "label": CLASSES[ci],
                        "visual_group": vg,
                        "audio_group": ag,
                        "video": video.as_posix(),
                        "audio": audio.as_posix(),
                    }
                )
    return rows


def _write_corpus(out: Path, params: _Params) -> None:
    """Write every clip, then the manifest, then ``synthetic.json`` (the mark of a complete corpus)."""
    clips_per_class, speakers = params.clips_per_class, params.speakers
    out.mkdir(parents=True, exist_ok=True)
    (out / "synthetic.json").unlink(missing_ok=True)
    _remove_previous(out)
    (out / "video").mkdir(exist_ok=True)
    (out / "audio").mkdir(exist_ok=True)

    # every clip draws from its own generator ([seed, speaker, class, rep]): the speakers can be written
    # by several processes and the files are the same byte for byte
    processes = min(os.cpu_count() or 1, speakers, 8)
    if processes > 1 and speakers * len(CLASSES) * clips_per_class >= PARALLEL_FROM_CLIPS:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
        with ProcessPoolExecutor(processes, mp_context=context) as pool:
            parts = list(pool.map(_write_speaker, [out] * speakers, [params] * speakers, range(speakers)))
    else:
        parts = [_write_speaker(out, params, s) for s in range(speakers)]
    rows = [row for part in parts for row in part]
    tmp = out / "manifest.csv.tmp"
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(MANIFEST_COLUMNS))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, out / "manifest.csv")
    meta = {
        "params": asdict(params),
        "n_clips": len(rows),
        "classes": list(CLASSES),
        "visual_groups": list(VISUAL_GROUPS),
        "audio_groups": list(AUDIO_GROUPS),
        "class_index": "2 * visual_group + audio_group",
        "n_frames": params.n_frames,
        "n_samples": params.n_samples,
    }
    tmp = out / "synthetic.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, out / "synthetic.json")
