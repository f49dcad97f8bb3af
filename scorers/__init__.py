"""Scorers, one module each, registered by name at import (bench.registry.SCORERS).

Shapes world: `world` (gold + 3 proxies). Real world: `pickscore`, `clip_score`,
`laion_aesthetic`, `hpsv2`, `hpsv21`, `imagereward` (shared machinery in `real`). Importing this
package loads no model and imports neither transformers nor torch (bench.lazy: torch is imported
when a scorer first scores); weights are found when a scorer is built and loaded on its first
`score` call.
"""
from scorers import aesthetic, clip_score, hpsv2, imagereward, pickscore, world  # noqa: F401
