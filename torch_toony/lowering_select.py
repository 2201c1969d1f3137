"""Order statistics and searches on the device, built on the sort network: kthvalue, median, mode,
searchsorted, unique, and the flat-index ops take/put."""

from __future__ import annotations
