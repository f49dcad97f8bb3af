"""Alignment methods, one module each, registered by name (bench.registry.METHODS).

Each method is declared here with its module, one-line summary and config dataclass
(methods/config.py), so that listing the methods and validating a config import no torch; the
module itself (which needs torch) is imported when a job first asks for the method, and registers
its class under the declared name. tests/test_cli.py checks every declaration against the class.
"""
from bench.registry import MethodConfig
from bench.registry import METHODS
from methods.config import BalancedDPOConfig, CPOConfig, DPOConfig, KTOConfig

for _name, _config, _summary in [
    ("base", MethodConfig, "No training: the pretrained backbone itself (every win rate is against this row)."),
    ("sft", MethodConfig, "Supervised fine-tuning on the preferred image of each non-tie pair (denoising loss)."),
    ("dpo", DPOConfig, "Diffusion-DPO: pairwise preference loss against a frozen reference, beta = 5000."),
    ("kto", KTOConfig, "Diffusion-KTO: per-image likes/dislikes, utility 1 - sigmoid(beta*s*(g - z)), beta = 1000."),
    ("balanced_dpo", BalancedDPOConfig,
     "BalancedDPO-style: majority vote of proxy scorers per pair, DPO loss, refreshed reference."),
    ("cpo", CPOConfig, "CPO (suite formulation): attribute-tree DPO anchored on an attribute-conditioned SFT model."),
]:
    METHODS.declare(_name, f"methods.{_name}", _summary, _config)
