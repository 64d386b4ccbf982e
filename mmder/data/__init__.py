"""The data path: corpus listings -> decoding -> a prepared uint8 cache -> folds -> fused datasets.

Modules: :mod:`~mmder.data.corpora` (adapter registry), :mod:`~mmder.data.synthetic` (a generated
corpus), :mod:`~mmder.data.decode` (OpenCV/PyAV), :mod:`~mmder.data.features` (frame sampling and
spectrogram images), :mod:`~mmder.data.cache` (prepare/open), :mod:`~mmder.data.folds` (protocols)
and :mod:`~mmder.data.dataset` (the torch Dataset). Nothing is imported here, so importing one
module does not pull in torch, OpenCV and PyAV all at once.
"""
