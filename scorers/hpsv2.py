"""HPSv2 and HPSv2.1 (Wu et al. 2023, "Human Preference Score v2"): OpenCLIP ViT-H-14 fine-tuned
on HPD v2, registered as `hpsv2` (v2.0 weights) and `hpsv21` (v2.1 weights). Scores of the two
versions are not comparable (tgxs002/HPSv2 README).

Source: tgxs002/HPSv2 hpsv2/img_score.py and hpsv2/evaluation.py: checkpoint
`xswu/HPSv2` `HPS_v2_compressed.pt` / `HPS_v2.1_compressed.pt` (hpsv2/utils.py hps_version_map),
its `state_dict` loaded into open_clip `ViT-H-14`; score = image_features @
text_features.T on L2-normalised features, i.e. the cosine (~0.2-0.35), no logit scale.

Scale convention (`scale` option): 1 (default) is `hpsv2.score`'s cosine; 100 is the HPSv2
benchmark tables' unit (evaluation.py multiplies by 100). result.json records which one ran.

How it runs here, and why: the open_clip checkpoint is converted at load time into a
transformers `CLIPModel` (key map in `open_clip_to_hf`; the architecture is identical: pre-norm
ViT, GELU, class-token pooling then ln_post, causal text transformer pooled at the end-of-text
token). open_clip_torch needs torchvision, which breaks `import transformers` beside the CPU torch
this suite pins, and the `hpsv2` package itself hard-codes CUDA autocast (fp16 produces exact ties,
HPSv2 #26), re-loads the checkpoint on every call and ships without its BPE vocabulary (hpsv2
1.2.0). The conversion runs on the default install, in fp32, batched.

Preprocessing as the vendored open_clip eval transform (src/open_clip/transform.py): bicubic
resize of the float *tensor* to 224 on the short side, centre crop, OpenAI mean/std. HPSv2 scores
therefore depend on torchvision's antialias default (True since torchvision 0.17; `antialias`
option). Text: transformers' CLIPTokenizer of laion/CLIP-ViT-H-14-laion2B-s32B-b79K (the same BPE
vocabulary as open_clip's bpe_simple_vocab_16e6; its text cleaning may differ on unusual unicode),
77 tokens, truncated keeping the end-of-text token.
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.lazy import torch  # imported on first use: validating a config needs no torch

from bench.registry import SCORERS, BenchError
from scorers.real import (OPENAI_MEAN, OPENAI_STD, Asset, RealScorer, count_blocks, load_exact, load_tokenizer,
                          read_checkpoint, take, tensor_preprocess, unit)


@dataclass
class HPSv2Config:
    checkpoint: str | None = None               # local .pt (or .safetensors); None: HF cache of repo_id/filename
    repo_id: str = "xswu/HPSv2"                 # hpsv2/img_score.py
    filename: str = "HPS_v2_compressed.pt"      # hpsv2/utils.py hps_version_map["v2.0"]
    tokenizer: str | None = None                # dir with a CLIP tokenizer; None: HF cache of tokenizer_id
    tokenizer_id: str = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
    vision_heads: int = 16                      # open_clip model_configs/ViT-H-14.json: width 1280 / head_width 80
    text_heads: int = 16                        # open_clip model_configs/ViT-H-14.json text_cfg.heads
    scale: float = 1.0                          # 1: hpsv2.score's cosine; 100: benchmark tables
    antialias: bool = True                      # tensor resize antialias (torchvision >= 0.17 default)
    tie_tolerance: float | None = None          # None: 1e-5 in cosine units x scale
    cache_dir: str | None = None
    device: str = "auto"


@dataclass
class HPSv21Config(HPSv2Config):
    filename: str = "HPS_v2.1_compressed.pt"    # hpsv2/utils.py hps_version_map["v2.1"]


BLOCK = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
         "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}


def _blocks(state: dict, src: str, dst: str, n: int, scorer: str, path) -> dict:
    """open_clip ResidualAttentionBlocks -> transformers CLIPEncoderLayers."""
    out = {}
    for i in range(n):
        s, d = f"{src}.{i}.", f"{dst}.{i}."
        for a, b in BLOCK.items():
            for kind in ("weight", "bias"):
                out[f"{d}{b}.{kind}"] = take(state, f"{s}{a}.{kind}", scorer, path)
        # nn.MultiheadAttention packs q, k, v row-wise in in_proj_weight / in_proj_bias
        for kind in ("weight", "bias"):
            q, k, v = take(state, f"{s}attn.in_proj_{kind}", scorer, path).chunk(3, dim=0)
            out.update({f"{d}self_attn.q_proj.{kind}": q, f"{d}self_attn.k_proj.{kind}": k,
                        f"{d}self_attn.v_proj.{kind}": v})
    return out


def _ln(state: dict, src: str, dst: str, scorer: str, path) -> dict:
    return {f"{dst}.{kind}": take(state, f"{src}.{kind}", scorer, path) for kind in ("weight", "bias")}


def open_clip_to_hf(state: dict, vision_heads: int, text_heads: int, scorer: str, path):
    """A transformers CLIPModel holding an open_clip CLIP state dict (sizes read from its shapes).
    Consumes `state`; a key it does not convert is an error (HPSv2 loads strictly)."""
    from transformers import CLIPConfig, CLIPModel

    def t(key: str) -> torch.Tensor:
        return take(state, key, scorer, path)
    nv = count_blocks(state, r"visual\.transformer\.resblocks\.(\d+)\.")
    nt = count_blocks(state, r"transformer\.resblocks\.(\d+)\.")
    conv, pos = t("visual.conv1.weight"), t("visual.positional_embedding")
    vproj, tproj = t("visual.proj"), t("text_projection")
    tok, tpos = t("token_embedding.weight"), t("positional_embedding")
    hf = {"vision_model.embeddings.patch_embedding.weight": conv,
          "vision_model.embeddings.class_embedding": t("visual.class_embedding"),
          "vision_model.embeddings.position_embedding.weight": pos,
          **_ln(state, "visual.ln_pre", "vision_model.pre_layrnorm", scorer, path),
          **_blocks(state, "visual.transformer.resblocks", "vision_model.encoder.layers", nv, scorer, path),
          **_ln(state, "visual.ln_post", "vision_model.post_layernorm", scorer, path),
          "visual_projection.weight": vproj.T.contiguous(),     # open_clip: pooled @ proj
          "text_model.embeddings.token_embedding.weight": tok,
          "text_model.embeddings.position_embedding.weight": tpos,
          **_blocks(state, "transformer.resblocks", "text_model.encoder.layers", nt, scorer, path),
          **_ln(state, "ln_final", "text_model.final_layer_norm", scorer, path),
          "text_projection.weight": tproj.T.contiguous(),
          "logit_scale": t("logit_scale")}
    if state:
        raise BenchError(f"{scorer}: {path} has {len(state)} tensor(s) an open_clip ViT CLIP does not "
                         f"have (first: {next(iter(state))}); is it an HPSv2 checkpoint?")
    width, patch, grid = conv.shape[0], conv.shape[-1], int(round((pos.shape[0] - 1) ** 0.5))
    # open_clip ViT-H-14: nn.GELU and nn.LayerNorm (eps 1e-5) in both towers
    vision = dict(hidden_size=width, intermediate_size=hf["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
                  num_hidden_layers=nv, num_attention_heads=vision_heads, image_size=grid * patch,
                  patch_size=patch, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=vproj.shape[1])
    text = dict(vocab_size=tok.shape[0], hidden_size=tok.shape[1],
                intermediate_size=hf["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
                num_hidden_layers=nt, num_attention_heads=text_heads, max_position_embeddings=tpos.shape[0],
                hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=tproj.shape[1])
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=vproj.shape[1]))
    load_exact(model, hf, scorer, path)
    return model.eval()


@SCORERS.register("hpsv2")
class HPSv2(RealScorer):
    """HPSv2 (v2.0 weights): cosine of OpenCLIP ViT-H-14 fine-tuned on HPD v2 (~0.2-0.35)."""
    name = "hpsv2"
    Config = HPSv2Config
    hps_version = "v2.0"

    def assets(self) -> list[Asset]:
        return [Asset("checkpoint", f"the HPS {self.hps_version} checkpoint",
                      self.cfg.repo_id, self.cfg.filename),
                Asset("tokenizer", "a CLIP tokenizer directory (laion/CLIP-ViT-H-14-laion2B-s32B-b79K)",
                      self.cfg.tokenizer_id)]

    @property
    def scale(self) -> float:
        return abs(self.cfg.scale)

    @property
    def convention(self) -> str:
        return (f"{self.cfg.scale:g} x cos(image, text), HPS {self.hps_version} weights, fp32, tensor resize "
                f"antialias={self.cfg.antialias} (hpsv2.score; x100 in the HPSv2 benchmark tables)")

    def load(self):
        path = self.paths["checkpoint"]
        ckpt = read_checkpoint(path, self.name)
        state = dict(ckpt.get("state_dict", ckpt))    # img_score.py reads the checkpoint's 'state_dict'
        model = open_clip_to_hf(state, self.cfg.vision_heads, self.cfg.text_heads, self.name, path)
        tok = load_tokenizer(self.name, self.paths["tokenizer"])
        return model.to(self.device), tok

    def forward(self, model, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        clip, tok = model
        px = tensor_preprocess(images, clip.config.vision_config.image_size, OPENAI_MEAN, OPENAI_STD,
                               self.cfg.antialias)
        img = unit(clip.visual_projection(clip.vision_model(pixel_values=px).pooler_output))
        ctx = clip.config.text_config.max_position_embeddings
        ids = tok(prompts, padding="max_length", truncation=True, max_length=ctx,
                  return_tensors="pt").input_ids.to(self.device)
        # open_clip encode_text: causal mask only, features at the end-of-text token (the largest id)
        h = clip.text_model(input_ids=ids).last_hidden_state
        txt = unit(clip.text_projection(h[torch.arange(len(ids), device=ids.device), ids.argmax(-1)]))
        return self.cfg.scale * (img * txt).sum(-1)


@SCORERS.register("hpsv21")
class HPSv21(HPSv2):
    """HPSv2.1 (v2.1 weights): cosine of OpenCLIP ViT-H-14 fine-tuned on HPD v2 (~0.2-0.35)."""
    name = "hpsv21"
    Config = HPSv21Config
    hps_version = "v2.1"
