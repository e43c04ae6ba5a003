"""Import kymatio 0.3 with scipy >= 1.17, for the ScatterNet parity test.

kymatio 0.3's package ``__init__`` imports its 3-D scattering, whose filter bank does
``from scipy.special import sph_harm``; scipy deprecated ``sph_harm`` in 1.15 and removed it in
1.17 in favour of ``sph_harm_y(n, m, theta, phi)`` (polar angle first). The 2-D scattering never
calls it. ``scattering2d_class()`` puts back ``scipy.special.sph_harm`` as the documented
equivalent, ``sph_harm(m, n, azimuth, polar) = sph_harm_y(n, m, polar, azimuth)``, only when it is
missing, then imports kymatio's numpy 2-D frontend.
"""

from __future__ import annotations

import scipy.special


def _sph_harm(m, n, azimuth, polar):
    return scipy.special.sph_harm_y(n, m, polar, azimuth)


def scattering2d_class():
    """``kymatio.numpy.Scattering2D`` (skips the calling test when kymatio is not installed)."""
    import pytest

    if not hasattr(scipy.special, "sph_harm"):
        scipy.special.sph_harm = _sph_harm
    kymatio_numpy = pytest.importorskip("kymatio.numpy")
    return kymatio_numpy.Scattering2D
