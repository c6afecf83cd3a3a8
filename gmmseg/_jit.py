"""One place that decides how gmmseg's Numba kernels are compiled and cached
(the engine's and io's alike).

Numba caches compiled kernels next to the source file (``__pycache__``) and
falls back to a per-user directory when that is not writable. Some installs
have neither (a read-only site-packages and a read-only or missing home), so
when the package directory cannot be written we point our own kernels at a
cache directory we know to be writable. The user's ``NUMBA_CACHE_DIR`` always
wins, and we leave numba's global setting as we found it for other packages.
"""

import os
import tempfile
from pathlib import Path

import numba

# Kernels live in this package (io) and in gmmseg.engine: one install, one
# answer to "can the cache go next to the source?".
_PACKAGE_DIR = Path(__file__).resolve().parent

# Fast-math flags for the arithmetic kernels: reassociation lets LLVM vectorise
# the reductions over samples. 'nnan' and 'ninf' are left out on purpose: a
# component with zero weight has log-weight -inf and must stay -inf.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


def _is_writable(path):
    """True when files can be created in ``path`` (creating it if needed)."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
        return True
    except OSError:
        return False


def user_cache_dir():
    """Return a writable directory for gmmseg's compiled kernels, or None."""
    candidates = []
    if os.environ.get("XDG_CACHE_HOME"):
        candidates.append(Path(os.environ["XDG_CACHE_HOME"]) / "gmmseg" / "numba")
    candidates.append(Path.home() / ".cache" / "gmmseg" / "numba")
    user = os.getuid() if hasattr(os, "getuid") else "user"
    candidates.append(Path(tempfile.gettempdir()) / f"gmmseg-numba-{user}")
    for candidate in candidates:
        if _is_writable(candidate):
            return candidate
    return None


def choose_cache():
    """Decide caching for our kernels.

    Returns ``(cache, override)``: whether kernels can be cached at all, and the
    directory gmmseg must force (None to keep numba's own choice).
    """
    if os.environ.get("NUMBA_CACHE_DIR") or _is_writable(_PACKAGE_DIR / "__pycache__"):
        return True, None
    found = user_cache_dir()
    if found is None:
        return False, None  # nowhere to write: compile in memory every run
    return True, str(found)


_CACHE, _OVERRIDE = choose_cache()


def kernel(*args, **options):
    """``numba.njit`` with gmmseg's defaults: ``nogil``, ``cache`` and a cache
    directory that works on read-only installs.

    Use as ``@kernel`` or ``@kernel(fastmath=FASTMATH)``. Decorating compiles
    nothing; compilation happens on the first call (or is loaded from cache).
    """
    options.setdefault("nogil", True)
    options.setdefault("cache", _CACHE)

    def decorate(func):
        if _OVERRIDE is None:
            return numba.njit(**options)(func)
        # numba picks the cache locator when the dispatcher is created, reading
        # config.CACHE_DIR at that moment: set it for our kernel only.
        previous = numba.config.CACHE_DIR
        numba.config.CACHE_DIR = _OVERRIDE
        try:
            return numba.njit(**options)(func)
        finally:
            numba.config.CACHE_DIR = previous

    if args and callable(args[0]):
        return decorate(args[0])
    return decorate
