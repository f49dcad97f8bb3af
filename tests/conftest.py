import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_arch():
    from bench.backbones import TinyArch
    # smaller than the shipped recipe: every test path runs, in seconds
    return TinyArch(block_out_channels=[16, 32], norm_num_groups=8, text_hidden=32)


@pytest.fixture(scope="session")
def tiny_pipe_dir(tmp_path_factory, tiny_arch):
    """A short pretraining run (the real recipe code, few steps), saved in the HF layout."""
    from bench import world as W
    from bench.backbones import PretrainConfig, pretrain
    pre = PretrainConfig(steps=4, batch_size=8, corpus_size=64, warmup=2, snr_gamma=None, init_from=None)
    return pretrain("tiny-sd15", tiny_arch, pre, W.WorldConfig(), tmp_path_factory.mktemp("cache"),
                    progress=False)
