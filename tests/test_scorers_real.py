"""Real-world scorers on tiny random-weight models with the real architectures' classes, saved in
the real on-disk layouts and loaded through the scorers' own loading code. Each score is checked
against its formula computed here independently (for HPSv2 and ImageReward: a functional forward
pass written from open_clip's and BLIP's original modules, on the original checkpoint keys)."""
import json
import re
import string

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from bench.evaluate import check_scorers, EvalConfig, get_scorer, score_images, scorer_record
from bench.registry import BenchError

PROMPTS = ["a red cat", "two blue dogs", "a cat", "a red cat", "one dog on a bed", "cats", "a dog", "red"]
OPENAI_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
OPENAI_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


def images(n=8, h=24, w=30, seed=0):
    """uint8 / 255 like the suite's samples: the PIL round trip of the scorers is lossless."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8).float() / 255


def pil(x):
    return [Image.fromarray((im.permute(1, 2, 0) * 255).round().byte().numpy()) for im in x]


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def batch_of_one_agrees(scorer, x, prompts):
    whole = scorer.score(x, prompts)
    single = torch.cat([scorer.score(x[i:i + 1], prompts[i:i + 1]) for i in range(len(x))])
    # fp32 matmuls of different batch shapes round differently (~1e-6 relative, x100 for CLIP score)
    assert torch.allclose(whole, single, atol=1e-4, rtol=1e-4)
    return whole


# ----------------------------------------------------------------------------- tiny assets

@pytest.fixture(scope="module")
def clip_tokenizer(tmp_path_factory):
    """A CLIPTokenizer (byte-level BPE class of the real one) over letters, no merges."""
    from transformers import CLIPTokenizer
    d = tmp_path_factory.mktemp("bpe")
    chars = list(string.ascii_lowercase)
    vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"))


def tiny_clip(tok, seed=0):
    from transformers import CLIPConfig, CLIPModel
    torch.manual_seed(seed)
    text = dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, eos_token_id=tok.eos_token_id,
                bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id, projection_dim=8)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                  image_size=16, patch_size=8, projection_dim=8)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).eval()


def save_processor(tok, path):
    from transformers import CLIPImageProcessor, CLIPProcessor
    ip = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    CLIPProcessor(image_processor=ip, tokenizer=tok).save_pretrained(path)


@pytest.fixture(scope="module")
def pickscore_dirs(tmp_path_factory, clip_tokenizer):
    """PickScore's layout: the model repo and the processor repo apart."""
    root = tmp_path_factory.mktemp("pickscore")
    tiny_clip(clip_tokenizer).save_pretrained(root / "model")
    save_processor(clip_tokenizer, root / "processor")
    return root / "model", root / "processor"


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory, clip_tokenizer):
    """openai/clip-vit-large-patch14's layout: model and processor in one repo."""
    d = tmp_path_factory.mktemp("clip")
    tiny_clip(clip_tokenizer, seed=1).save_pretrained(d)
    save_processor(clip_tokenizer, d)
    return d


def reference_clip(path, proc_path, x, prompts):
    """Image and text embeddings the PickScore README way: processor (PIL) + CLIPModel."""
    from transformers import CLIPModel, CLIPProcessor
    model, proc = CLIPModel.from_pretrained(path).eval(), CLIPProcessor.from_pretrained(proc_path)
    with torch.no_grad():
        px = proc(images=pil(x), return_tensors="pt").pixel_values
        txt = proc(text=prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        i = model.get_image_features(pixel_values=px).pooler_output
        t = model.get_text_features(input_ids=txt.input_ids, attention_mask=txt.attention_mask).pooler_output
    return unit(i), unit(t), model.logit_scale.exp().item()


# ----------------------------------------------------------------------------- CLIP family

def test_pickscore_is_logit_scale_times_cosine(pickscore_dirs):
    model, proc = pickscore_dirs
    x = images()
    img, txt, scale = reference_clip(model, proc, x, PROMPTS)
    cos = (img * txt).sum(-1)
    sc = get_scorer("pickscore", {"model": str(model), "processor": str(proc), "device": "cpu"})
    assert torch.allclose(batch_of_one_agrees(sc, x, PROMPTS), scale * cos, atol=1e-4)
    raw = get_scorer("pickscore", {"model": str(model), "processor": str(proc), "device": "cpu", "scale": "cosine"})
    assert torch.allclose(raw.score(x, PROMPTS), cos, atol=1e-6)
    assert scorer_record(sc)["convention"].startswith("logit_scale.exp() * cos")
    assert sc.tie_tolerance == pytest.approx(1e-3) and raw.tie_tolerance == pytest.approx(1e-5)


def test_clip_score_scale_and_clipping(clip_dir):
    x = images(seed=1)
    img, txt, _ = reference_clip(clip_dir, clip_dir, x, PROMPTS)
    raw = 100 * (img * txt).sum(-1)
    opts = {"model": str(clip_dir), "device": "cpu"}
    assert torch.allclose(batch_of_one_agrees(get_scorer("clip_score", opts), x, PROMPTS), raw.clamp(min=0), atol=1e-4)
    unclipped = get_scorer("clip_score", {**opts, "clip_at_zero": False, "scale": 2.5})
    assert torch.allclose(unclipped.score(x, PROMPTS), raw / 40, atol=1e-5)


def test_laion_aesthetic_is_mlp_on_normalised_embedding(clip_dir, tmp_path):
    torch.manual_seed(2)
    # improved-aesthetic-predictor's MLP, saved as its state_dict (.pth) like the published file
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 1024), torch.nn.Dropout(0.2), torch.nn.Linear(1024, 128),
                              torch.nn.Dropout(0.2), torch.nn.Linear(128, 64), torch.nn.Dropout(0.1),
                              torch.nn.Linear(64, 16), torch.nn.Linear(16, 1)).eval()
    path = tmp_path / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save({f"layers.{k}": v for k, v in mlp.state_dict().items()}, path)
    x = images(seed=2)
    img, _, _ = reference_clip(clip_dir, clip_dir, x, PROMPTS)
    with torch.no_grad():
        expected = mlp(img).squeeze(-1)
    sc = get_scorer("laion_aesthetic", {"mlp": str(path), "clip": str(clip_dir), "device": "cpu"})
    assert torch.allclose(batch_of_one_agrees(sc, x, PROMPTS), expected, atol=1e-5)


# ----------------------------------------------------------------------------- HPSv2

def open_clip_state(vocab: int, ctx: int = 16, w: int = 16, layers: int = 2, embed: int = 8, patch: int = 8,
                    grid: int = 2, seed: int = 3) -> dict:
    """A random state dict with open_clip's CLIP key names and shapes (model.py / transformer.py)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.2  # noqa: E731
    sd = {"visual.conv1.weight": r(w, 3, patch, patch), "visual.class_embedding": r(w),
          "visual.positional_embedding": r(grid * grid + 1, w), "visual.proj": r(w, embed),
          "token_embedding.weight": r(vocab, w), "positional_embedding": r(ctx, w),
          "text_projection": r(w, embed), "logit_scale": torch.tensor(4.6)}
    for ln in ("visual.ln_pre", "visual.ln_post", "ln_final"):
        sd[f"{ln}.weight"], sd[f"{ln}.bias"] = 1 + r(w), r(w)
    for tower in ("visual.transformer", "transformer"):
        for i in range(layers):
            p = f"{tower}.resblocks.{i}."
            for ln in ("ln_1", "ln_2"):
                sd[p + ln + ".weight"], sd[p + ln + ".bias"] = 1 + r(w), r(w)
            sd[p + "attn.in_proj_weight"], sd[p + "attn.in_proj_bias"] = r(3 * w, w), r(3 * w)
            sd[p + "attn.out_proj.weight"], sd[p + "attn.out_proj.bias"] = r(w, w), r(w)
            sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"] = r(4 * w, w), r(4 * w)
            sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"] = r(w, 4 * w), r(w)
    return sd


def _ln(x, sd, p, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], eps)


def _resblock(x, sd, p, heads, mask=None):
    """open_clip ResidualAttentionBlock: x + attn(ln_1(x)); x + mlp(ln_2(x)) (GELU)."""
    h = _ln(x, sd, p + "ln_1").transpose(0, 1)
    a, _ = F.multi_head_attention_forward(h, h, h, x.shape[-1], heads, sd[p + "attn.in_proj_weight"],
                                          sd[p + "attn.in_proj_bias"], None, None, False, 0.0,
                                          sd[p + "attn.out_proj.weight"], sd[p + "attn.out_proj.bias"],
                                          training=False, need_weights=False, attn_mask=mask)
    x = x + a.transpose(0, 1)
    h = _ln(x, sd, p + "ln_2")
    return x + F.linear(F.gelu(F.linear(h, sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"])),
                        sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])


def open_clip_cosine(sd, px, ids, heads=2, layers=2):
    """open_clip CLIP.forward on normalised features, then image . text (hpsv2 img_score.py)."""
    x = F.conv2d(px, sd["visual.conv1.weight"], stride=sd["visual.conv1.weight"].shape[-1]).flatten(2).transpose(1, 2)
    x = torch.cat([sd["visual.class_embedding"].expand(len(x), 1, -1), x], 1) + sd["visual.positional_embedding"]
    x = _ln(x, sd, "visual.ln_pre")
    for i in range(layers):
        x = _resblock(x, sd, f"visual.transformer.resblocks.{i}.", heads)
    img = _ln(x[:, 0], sd, "visual.ln_post") @ sd["visual.proj"]
    t = sd["token_embedding.weight"][ids] + sd["positional_embedding"]
    causal = torch.full((ids.shape[1], ids.shape[1]), float("-inf")).triu(1)
    for i in range(layers):
        t = _resblock(t, sd, f"transformer.resblocks.{i}.", heads, causal)
    txt = _ln(t, sd, "ln_final")[torch.arange(len(ids)), ids.argmax(-1)] @ sd["text_projection"]
    return (unit(img) * unit(txt)).sum(-1)


@pytest.fixture(scope="module")
def hps_assets(tmp_path_factory, clip_tokenizer):
    d = tmp_path_factory.mktemp("hps")
    sd = open_clip_state(len(clip_tokenizer))
    torch.save({"state_dict": sd}, d / "HPS_v2_compressed.pt")    # img_score.py reads ['state_dict']
    clip_tokenizer.save_pretrained(d / "tokenizer")
    return d, sd


def test_hpsv2_matches_open_clip_forward(hps_assets, clip_tokenizer):
    d, sd = hps_assets
    x = images(h=24, w=24, seed=4)
    px = F.interpolate(x, size=(16, 16), mode="bicubic", align_corners=False, antialias=True)
    px = (px - OPENAI_MEAN) / OPENAI_STD
    ids = clip_tokenizer(PROMPTS, padding="max_length", truncation=True, max_length=16, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = open_clip_cosine(sd, px, ids)
    opts = {"checkpoint": str(d / "HPS_v2_compressed.pt"), "tokenizer": str(d / "tokenizer"),
            "vision_heads": 2, "text_heads": 2, "device": "cpu"}
    assert torch.allclose(batch_of_one_agrees(get_scorer("hpsv2", opts), x, PROMPTS), expected, atol=1e-5)
    bench_unit = get_scorer("hpsv2", {**opts, "scale": 100.0})     # the benchmark tables' x100
    assert torch.allclose(bench_unit.score(x, PROMPTS), 100 * expected, atol=1e-3)
    assert "HPS v2.0" in scorer_record(bench_unit)["convention"]


def test_hps_checkpoint_missing_a_tensor_is_named(hps_assets, tmp_path):
    d, sd = hps_assets
    bad = {k: v for k, v in sd.items() if k != "visual.ln_post.bias"}
    torch.save({"state_dict": bad}, tmp_path / "HPS_v2.1_compressed.pt")
    sc = get_scorer("hpsv21", {"checkpoint": str(tmp_path / "HPS_v2.1_compressed.pt"),
                               "tokenizer": str(d / "tokenizer"), "vision_heads": 2, "text_heads": 2, "device": "cpu"})
    with pytest.raises(BenchError, match=r"has no tensor 'visual\.ln_post\.bias'; is it the right checkpoint\?"):
        sc.score(images(n=1), PROMPTS[:1])


# ----------------------------------------------------------------------------- ImageReward

BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "cat", "cats", "two", "blue", "dogs",
              "dog", "one", "on", "bed"]
MED = dict(vocab_size=len(BERT_VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
           intermediate_size=32, hidden_act="gelu", max_position_embeddings=40, layer_norm_eps=1e-12,
           hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, pad_token_id=0, type_vocab_size=2,
           architectures=["BertModel"], model_type="bert", add_cross_attention=True, encoder_width=16)


def imagereward_state(w=16, layers=2, patch=8, grid=2, seed=5) -> dict:
    """A random state dict with ImageReward.pt's key names: blip.visual_encoder (BLIP vit.py),
    blip.text_encoder (BLIP med.py BertModel with cross-attention), the ITC heads and mlp.layers."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.2  # noqa: E731
    h = MED["hidden_size"]
    v, t = "blip.visual_encoder.", "blip.text_encoder."
    sd = {v + "cls_token": r(1, 1, w), v + "pos_embed": r(1, grid * grid + 1, w),
          v + "patch_embed.proj.weight": r(w, 3, patch, patch), v + "patch_embed.proj.bias": r(w),
          v + "norm.weight": 1 + r(w), v + "norm.bias": r(w),
          t + "embeddings.word_embeddings.weight": r(MED["vocab_size"], h),
          t + "embeddings.position_embeddings.weight": r(MED["max_position_embeddings"], h),
          t + "embeddings.LayerNorm.weight": 1 + r(h), t + "embeddings.LayerNorm.bias": r(h),
          t + "embeddings.position_ids": torch.arange(MED["max_position_embeddings"]).view(1, -1),
          "blip.vision_proj.weight": r(8, w), "blip.vision_proj.bias": r(8),
          "blip.text_proj.weight": r(8, h), "blip.text_proj.bias": r(8)}
    for i in range(layers):
        p = f"{v}blocks.{i}."
        for name, shape in (("norm1", (w,)), ("norm2", (w,))):
            sd[p + name + ".weight"], sd[p + name + ".bias"] = 1 + r(*shape), r(*shape)
        sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"] = r(3 * w, w), r(3 * w)
        sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"] = r(w, w), r(w)
        sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"] = r(4 * w, w), r(4 * w)
        sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"] = r(w, 4 * w), r(w)
        q = f"{t}encoder.layer.{i}."
        for att, kv in (("attention", h), ("crossattention", w)):
            sd[f"{q}{att}.self.query.weight"], sd[f"{q}{att}.self.query.bias"] = r(h, h), r(h)
            for name in ("key", "value"):
                sd[f"{q}{att}.self.{name}.weight"], sd[f"{q}{att}.self.{name}.bias"] = r(h, kv), r(h)
            sd[f"{q}{att}.output.dense.weight"], sd[f"{q}{att}.output.dense.bias"] = r(h, h), r(h)
            sd[f"{q}{att}.output.LayerNorm.weight"], sd[f"{q}{att}.output.LayerNorm.bias"] = 1 + r(h), r(h)
        sd[q + "intermediate.dense.weight"], sd[q + "intermediate.dense.bias"] = r(32, h), r(32)
        sd[q + "output.dense.weight"], sd[q + "output.dense.bias"] = r(h, 32), r(h)
        sd[q + "output.LayerNorm.weight"], sd[q + "output.LayerNorm.bias"] = 1 + r(h), r(h)
    for k, (i, o) in zip((0, 2, 4, 6, 7), ((h, 1024), (1024, 128), (128, 64), (64, 16), (16, 1))):
        sd[f"mlp.layers.{k}.weight"], sd[f"mlp.layers.{k}.bias"] = r(o, i) / 4, r(o)
    return sd


def _lin(x, sd, p):
    return F.linear(x, sd[p + ".weight"], sd[p + ".bias"])


def _heads(x, n):
    return x.view(x.shape[0], x.shape[1], n, -1).transpose(1, 2)


def _bert_attention(x, ctx, sd, p, n, mask):
    """med.py BertAttention: softmax(QK^T/sqrt(d) + mask) V, dense, residual, LayerNorm."""
    q, k, v = (_heads(_lin(src, sd, f"{p}.self.{m}"), n) for m, src in (("query", x), ("key", ctx), ("value", ctx)))
    s = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    a = ((s if mask is None else s + mask).softmax(-1) @ v).transpose(1, 2).reshape(x.shape)
    return _ln(_lin(a, sd, f"{p}.output.dense") + x, sd, f"{p}.output.LayerNorm", MED["layer_norm_eps"])


def imagereward_reference(sd, px, ids, att, heads=2, layers=2):
    v, t, eps = "blip.visual_encoder.", "blip.text_encoder.", 1e-6
    w = sd[v + "cls_token"].shape[-1]
    x = F.conv2d(px, sd[v + "patch_embed.proj.weight"], sd[v + "patch_embed.proj.bias"], stride=8)
    x = torch.cat([sd[v + "cls_token"].expand(len(px), -1, -1), x.flatten(2).transpose(1, 2)], 1) + sd[v + "pos_embed"]
    for i in range(layers):   # BLIP vit.py Block: pre-norm, packed qkv, scale head_dim^-0.5
        p = f"{v}blocks.{i}."
        qkv = _lin(_ln(x, sd, p + "norm1", eps), sd, p + "attn.qkv").view(len(x), x.shape[1], 3, heads, -1)
        q, k, vv = qkv.permute(2, 0, 3, 1, 4)
        a = ((q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5).softmax(-1) @ vv
        x = x + _lin(a.transpose(1, 2).reshape(len(x), -1, w), sd, p + "attn.proj")
        x = x + _lin(F.gelu(_lin(_ln(x, sd, p + "norm2", eps), sd, p + "mlp.fc1")), sd, p + "mlp.fc2")
    image = _ln(x, sd, v + "norm", eps)
    e = sd[t + "embeddings.word_embeddings.weight"][ids]
    e = e + sd[t + "embeddings.position_embeddings.weight"][:ids.shape[1]]
    e = _ln(e, sd, t + "embeddings.LayerNorm", MED["layer_norm_eps"])
    mask = (1.0 - att[:, None, None, :].float()) * -10000.0       # med.py get_extended_attention_mask
    for i in range(layers):   # med.py BertLayer, mode='multimodal'
        q = f"{t}encoder.layer.{i}."
        e = _bert_attention(e, e, sd, q + "attention", MED["num_attention_heads"], mask)
        e = _bert_attention(e, image, sd, q + "crossattention", MED["num_attention_heads"], None)
        f = F.gelu(_lin(e, sd, q + "intermediate.dense"))
        e = _ln(_lin(f, sd, q + "output.dense") + e, sd, q + "output.LayerNorm", MED["layer_norm_eps"])
    r = e[:, 0]
    for k in (0, 2, 4, 6, 7):
        r = _lin(r, sd, f"mlp.layers.{k}")
    return (r.squeeze(-1) - 0.16717362830052426) / 1.0333394966054072    # ImageReward.py


@pytest.fixture(scope="module")
def imagereward_assets(tmp_path_factory):
    from transformers import BertTokenizer
    d = tmp_path_factory.mktemp("imagereward")
    sd = imagereward_state()
    torch.save(sd, d / "ImageReward.pt")
    (d / "med_config.json").write_text(json.dumps(MED))
    (d / "vocab.txt").write_text("\n".join(BERT_VOCAB) + "\n")
    BertTokenizer(str(d / "vocab.txt")).save_pretrained(d / "bert-base-uncased")
    return d, sd


def test_imagereward_matches_blip_forward(imagereward_assets):
    from transformers import BertTokenizer
    d, sd = imagereward_assets
    x = images(h=24, w=24, seed=6)
    px = torch.stack([torch.from_numpy(np.asarray(im.resize((16, 16), Image.Resampling.BICUBIC), np.float32) / 255)
                      .permute(2, 0, 1) for im in pil(x)])
    px = (px - OPENAI_MEAN) / OPENAI_STD
    tok = BertTokenizer.from_pretrained(d / "bert-base-uncased")
    enc = tok(PROMPTS, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    with torch.no_grad():
        expected = imagereward_reference(sd, px, enc.input_ids, enc.attention_mask)
    sc = get_scorer("imagereward", {"checkpoint": str(d / "ImageReward.pt"), "med_config": str(d / "med_config.json"),
                                    "tokenizer": str(d / "bert-base-uncased"), "vision_heads": 2, "device": "cpu"})
    assert torch.allclose(batch_of_one_agrees(sc, x, PROMPTS), expected, atol=1e-4)


def test_imagereward_truncates_prompts_at_35_tokens(imagereward_assets):
    d, _ = imagereward_assets
    opts = {"checkpoint": str(d / "ImageReward.pt"), "med_config": str(d / "med_config.json"),
            "tokenizer": str(d / "bert-base-uncased"), "vision_heads": 2, "device": "cpu"}
    sc = get_scorer("imagereward", opts)
    x = images(n=2, seed=7)
    long = " ".join(["a red cat"] * 11)                 # 33 words + [CLS] + [SEP] = 35 tokens
    assert torch.allclose(sc.score(x, [long, long]), sc.score(x, [long + " dogs", long + " on a bed"]))


# ----------------------------------------------------------------------------- weights not found

def hf_cache_entry(cache, repo_id, files_from, sha="0123abcd" * 5):
    """The HF cache layout: models--org--name/{refs/main, snapshots/<sha>/...}."""
    import shutil
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(files_from, repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)


def test_weights_from_the_hf_cache_are_recorded_with_their_revision(tmp_path, pickscore_dirs):
    model, proc = pickscore_dirs
    hf_cache_entry(tmp_path, "yuvalkirstain/PickScore_v1", model)
    hf_cache_entry(tmp_path, "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", proc)
    sc = get_scorer("pickscore", {"cache_dir": str(tmp_path), "device": "cpu"})
    assert sc.score(images(n=2), PROMPTS[:2]).shape == (2,)
    assert scorer_record(sc)["weights"] == {"model": "yuvalkirstain/PickScore_v1@" + "0123abcd" * 5,
                                            "processor": "laion/CLIP-ViT-H-14-laion2B-s32B-b79K@" + "0123abcd" * 5}


@pytest.mark.parametrize("name,what", [
    ("pickscore", r"the PickScore CLIPModel directory \(yuvalkirstain/PickScore_v1\)"),
    ("clip_score", r"a CLIPModel directory with its processor \(openai/clip-vit-large-patch14\)"),
    ("hpsv2", r"the HPS v2\.0 checkpoint \(xswu/HPSv2 HPS_v2_compressed\.pt\)"),
    ("hpsv21", r"the HPS v2\.1 checkpoint \(xswu/HPSv2 HPS_v2\.1_compressed\.pt\)"),
    ("imagereward", r"the ImageReward checkpoint \(THUDM/ImageReward ImageReward\.pt\)"),
])
def test_missing_weights_is_one_line_naming_what_and_how(tmp_path, name, what):
    with pytest.raises(BenchError) as e:
        get_scorer(name, {"cache_dir": str(tmp_path)})
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{name}: ") and re.search(what + f" is not in the HF cache \\({tmp_path}\\)", msg)
    assert "run `hf download " in msg and f"++eval.scorer_options.{name}." in msg


def test_aesthetic_mlp_has_no_default_location(tmp_path):
    with pytest.raises(BenchError, match=r"^laion_aesthetic: the aesthetic MLP weights .* has no default location; "
                                         r"set \+\+eval\.scorer_options\.laion_aesthetic\.mlp=<local path>$"):
        get_scorer("laion_aesthetic", {"cache_dir": str(tmp_path)})
    with pytest.raises(BenchError, match=r"mlp=/nonexistent/mlp\.pth does not exist; point it at the aesthetic MLP"):
        get_scorer("laion_aesthetic", {"mlp": "/nonexistent/mlp.pth", "cache_dir": str(tmp_path)})


# ----------------------------------------------------------------------------- the evaluator

def test_world_and_real_scorers_score_one_eval_set(pickscore_dirs):
    from bench import world as W
    model, proc = pickscore_dirs
    opts = {"pickscore": {"model": str(model), "processor": str(proc), "device": "cpu"}}
    prompts = [p.text for p in W.split_prompts(W.WorldConfig())["eval"][:3]]
    imgs = (images(n=3, h=32, w=32) * 255).round().to(torch.uint8)
    df = score_images(imgs, prompts, ["gold", "pickscore"], batch_size=2, progress=False, options=opts)
    assert list(df.columns) == ["gold", "pickscore"] and len(df) == 3 and df.notna().all().all()
    alone = get_scorer("pickscore", opts["pickscore"]).score(imgs.float() / 255, prompts)
    assert np.allclose(df["pickscore"], alone.numpy(), atol=1e-5)
    rec = scorer_record(get_scorer("gold"))
    assert rec["convention"].startswith("shapes-world utility 'gold'") and rec["version"] == "1"


def test_eval_checks_reject_bad_options_and_world_scorers_on_real_prompts(pickscore_dirs):
    model, proc = pickscore_dirs
    with pytest.raises(BenchError, match=r"unknown option\(s\) \['scael'\] for scorer 'pickscore'; valid: "):
        check_scorers(EvalConfig(scorers=["pickscore"], scorer_options={"pickscore": {"scael": "cosine"}}), [])
    with pytest.raises(BenchError, match=r"scorer 'gold' takes no options"):
        check_scorers(EvalConfig(scorers=["gold"], scorer_options={"gold": {"x": 1}}), [])
    with pytest.raises(BenchError, match=r"scorer\(s\) \['hpsv2'\] that are not in eval.scorers"):
        check_scorers(EvalConfig(scorers=["gold"], scorer_options={"hpsv2": {}}), [])
    with pytest.raises(BenchError, match=r"scorer 'gold' reads shapes-world prompts only and 'a photo of a cat' is"):
        check_scorers(EvalConfig(scorers=["gold"]), ["a photo of a cat"])
    with pytest.raises(BenchError, match=r"pickscore: unknown scale 'softmax'; valid: logit_scale, cosine"):
        get_scorer("pickscore", {"model": str(model), "processor": str(proc), "scale": "softmax"})


# ----------------------------------------------------------------------------- one job, real eval set

def compose(*overrides):
    from bench.runner import compose_config
    return compose_config(list(overrides))


def test_job_on_partiprompts_records_each_scorers_convention(tmp_path, tiny_pipe_dir, pickscore_dirs, clip_dir):
    import bench.runner as runner
    model, proc = pickscore_dirs
    parti = tmp_path / "PartiPrompts.tsv"
    parti.write_text("Prompt\tCategory\tChallenge\tNote\n"
                     "a red cat\tAnimals\tBasic\t\ntwo blue dogs\tAnimals\tBasic\t\n")
    common = [f"backbone.weights={tiny_pipe_dir}", f"paths.results={tmp_path / 'results'}",
              f"paths.cache={tmp_path / 'cache'}", "method=base", "eval.prompt_set=partiprompts",
              f"eval.prompt_path={parti}", "eval.seeds_per_prompt=2", "eval.n_bootstrap=100", "progress=false"]
    with pytest.raises(BenchError, match=r"scorer 'gold' reads shapes-world prompts only and 'a red cat' is not one"):
        runner.validate(compose(*common, "eval.scorers=[gold]"))
    out = runner.run_job(compose(*common, "eval.scorers=[pickscore,clip_score]",
                                 f"+eval.scorer_options.pickscore={{model:'{model}',processor:'{proc}',device:cpu}}",
                                 f"+eval.scorer_options.clip_score={{model:'{clip_dir}',device:cpu}}"))
    res = json.loads((out / "result.json").read_text())
    assert res["scorers"]["pickscore"]["convention"].startswith("logit_scale.exp() * cos")
    assert res["scorers"]["clip_score"]["convention"].startswith("100 x cos(image, text), max(., 0) per image")
    pick = res["scorers"]["pickscore"]
    assert pick["version"] == "1" and pick["weights"] == {"model": str(model), "processor": str(proc)}
    assert res["scorers"]["pickscore"]["vs_base"]["n_prompts"] == 2 and res["attributes"]["model"] == {}
    scores = pd.read_parquet(out / "scores.parquet")
    assert scores["prompt_id"].tolist() == ["parti/0000"] * 2 + ["parti/0001"] * 2
    assert scores["pickscore"].notna().all()
