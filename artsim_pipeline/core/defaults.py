"""The default values of the settings that core modules also default to (plain Python, no imports).

:mod:`artsim_pipeline.config` declares every setting with these values, and the core classes that take the
same knob (:class:`~artsim_pipeline.core.http.HttpClient`, :class:`~artsim_pipeline.core.image_cache.ImageCacheOptions`,
:class:`~artsim_pipeline.core.storage.ObjectStoreOptions`) default to them, so a default is written once.
(``core/`` does not import the settings module: the values live here and the settings module imports them.)
"""

from __future__ import annotations

#: ``ARTSIM_HTTP_TIMEOUT``: seconds one HTTP request (or object-store call) may take.
HTTP_TIMEOUT_S = 30.0
#: ``ARTSIM_HTTP_RETRIES``: retries after a failed request (so at most this + 1 attempts).
HTTP_RETRIES = 5
#: ``ARTSIM_REQUESTS_PER_SECOND``: image downloads per second, per host.
REQUESTS_PER_SECOND = 10.0
#: ``ARTSIM_DOWNLOAD_WORKERS``: image downloads in parallel.
DOWNLOAD_WORKERS = 8
#: ``ARTSIM_IMAGE_SIZE``: the long side (pixels) images are cached at.
IMAGE_SIZE = 1200
#: ``ARTSIM_MIN_SIDE``: paintings whose shorter side is below this (pixels) are skipped.
MIN_SIDE = 300
