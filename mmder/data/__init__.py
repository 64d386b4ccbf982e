"""The data path: corpus listings -> decoding -> a prepared uint8 cache -> folds -> fused datasets.

Modules: :mod:`~mmder.data.corpora` (adapter registry, typed options; one module per real corpus),
:mod:`~mmder.data.synthetic` (a generated corpus), :mod:`~mmder.data.decode` (OpenCV/PyAV readers),
:mod:`~mmder.data.features` (frame sampling and spectrogram images), :mod:`~mmder.data.preprocess`
(settings and cache key), :mod:`~mmder.data.extract` (one clip -> arrays), :mod:`~mmder.data.store`
and :mod:`~mmder.data.partial` (the resumable cache folder), :mod:`~mmder.data.integrity` (its
self-check), :mod:`~mmder.data.cache` (opening a cache), :mod:`~mmder.data.folds` (protocols) and
:mod:`~mmder.data.dataset` (the torch Dataset). Nothing is imported here, so importing one module
does not pull in torch, OpenCV and PyAV all at once.
"""
