"""The workloads behind the published figures, traced once per process from Hugging Face
configurations with random weights (nothing is downloaded).

Static weights are dropped from the cached workloads: no figure reads weight values (FlexiSAGA's
figures use a uniform `sparsity=`), and keeping them would keep whole models in memory.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from hwmodels import trace
from hwmodels.workload import Workload


def _vit():
    from transformers import ViTConfig, ViTModel  # ViT-B/16 is the default configuration

    return ViTModel(ViTConfig(), add_pooling_layer=False), torch.randn(1, 3, 224, 224)


def _bert(large: bool, seq: int):
    from transformers import BertConfig, BertModel

    config = (
        BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
        if large
        else BertConfig()
    )  # the default configuration is BERT-Base
    return BertModel(config, add_pooling_layer=False), torch.zeros(1, seq, dtype=torch.long)


def _roberta(seq: int):
    from transformers import RobertaConfig, RobertaModel

    config = RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1)  # roberta-base
    return RobertaModel(config, add_pooling_layer=False), torch.zeros(1, seq, dtype=torch.long)


def _resnet50():
    from transformers import ResNetConfig, ResNetModel  # the default configuration is ResNet-50

    return ResNetModel(ResNetConfig()), torch.randn(1, 3, 224, 224)


def _mobilenet_v2():
    from transformers import MobileNetV2Config, MobileNetV2Model  # default: MobileNetV2 1.0, 224

    return MobileNetV2Model(MobileNetV2Config()), torch.randn(1, 3, 224, 224)


BUILDERS = {
    "vit_b16": _vit,
    "bert_base_512": lambda: _bert(False, 512),
    "bert_large_512": lambda: _bert(True, 512),
    "roberta_base_384": lambda: _roberta(384),
    "resnet50": _resnet50,
    "mobilenet_v2": _mobilenet_v2,
}
"""Workload name -> builder of (model, input)."""


@functools.lru_cache(maxsize=None)
def workload(name: str) -> Workload:
    """The traced workload `name` (a key of BUILDERS), built and traced once per process."""
    if name not in BUILDERS:
        raise ValueError(f"workload must be one of {sorted(BUILDERS)}, got {name!r}")
    with torch.random.fork_rng():  # random weights, without disturbing the caller's generator
        torch.manual_seed(0)
        model, x = BUILDERS[name]()
        traced = trace(model.eval(), x)
    ops = tuple(dataclasses.replace(op, weight=None) if op.weight is not None else op for op in traced.ops)
    return Workload(ops, batch=traced.batch, name=name)


def first_layers(w: Workload, layers: int) -> Workload:
    """`w` keeping only its first `layers` repeated blocks (and every op outside the blocks)."""
    ops = tuple(op for op in w.ops if op.layer is None or op.layer < layers)
    return Workload(ops, batch=w.batch, name=f"{w.name}[:{layers} layers]")
