"""Every registered preset, through the method registry, with tiny overrides (a small random VAE or the shipped TAEF2,
a small codebook or ViT): it builds, takes one training step on the shared loop, survives a save/load round trip and
an encode/decode (or sample) round trip, and a builder of another method refuses it with one clear line.

The tests are parametrised over `coda_nb.config.list_presets()`, so a new method or preset is tested the moment it
registers; a method with no tiny overrides below fails `test_every_method_has_tiny_overrides`, naming it.
"""
from __future__ import annotations
import dataclasses, os, tempfile, warnings
from pathlib import Path
import pytest
import torch

os.environ.setdefault('OMP_NUM_THREADS', '1')
torch.set_num_threads(1)

from coda_nb.config import build, get_method, get_preset, list_methods, list_presets, load_plugins, ConfigError
from coda_nb.pretrained import load_pretrained, weights_digest
from coda_nb.token_kinds import TokenSpec

load_plugins()

# what makes each method's presets small enough for a CPU test: model keys (bare or dotted), per method
_SMALL_KL = dict(kind='small-kl', latent_channels=4)
TINY_MODEL = {
    'coda': lambda p: dict(vae=_SMALL_KL, codebook_size=32 if p.model['quantizer'].get('quantizer') != 'fsq' else p.model['quantizer']['codebook_size'],
                           rank=2, targets=['conv1', 'conv2'], image_size=64,           # 4x small KL-VAE: a 16 x 16 latent
                           scales=[1, 2, 4, 8, 16] if len(p.model['quantizer']['scales']) > 1 else [16],
                           **({'attn_dim': 8} if 'attn_dim' in p.model['quantizer'] else {})),
    'latentbit': lambda p: dict(vae=dict(kind='tae', variant='taef2'), dim=32, depth=1, heads=2, image_size=32, frames=1, patch=[1, 1, 1]),
    'maskgit': lambda p: dict(dim=32, depth=2, heads=2),
}
TINY_TRAIN = dict(steps=1, batch_size=2, grad_accum=1, n_train=4, ckpt_every=0, log_every=1, eval_every=0, progress=False,
                  lpips=0.0, gan=None, ema=False, mixed_precision='no', warmup_steps=0)
GEN_SPECS = [TokenSpec('index', [(1, 1), (2, 2)], codebook_size=16), TokenSpec('bits', [(2, 2)], bits=6)]

PRESETS = list_presets()


def _tiny(name, **extra):
    p = get_preset(name)
    m = get_method(p.model['method'])
    kw = TINY_MODEL[m.name](p) | extra
    if m.family == 'generator': kw |= dict(token_spec=GEN_SPECS[0], num_classes=3)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return m, build(name, **kw)


def _images(model, n=2):
    s = model.token_spec.image_size
    return torch.rand(n, 3, s, s, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_every_method_has_tiny_overrides():
    missing = [m for m in list_methods() if m not in TINY_MODEL and m != 'toy']
    assert not missing, f'methods with no tiny overrides in {__file__}: {missing}'


def test_every_preset_names_a_registered_method():
    bad = [n for n in PRESETS if get_preset(n).model.get('method') not in list_methods()]
    assert not bad, f'presets whose method is not registered: {bad}'


@pytest.mark.parametrize('name', PRESETS)
def test_builds_and_round_trips(name, tmp_path):
    m, model = _tiny(name)
    assert isinstance(model, m.model), f'{name}: built a {type(model).__name__}, not the registered {m.model.__name__}'
    model.eval()
    model.save_pretrained(tmp_path/'saved')
    again = load_pretrained(tmp_path/'saved').eval()
    assert type(again) is type(model)
    sd, sd2 = model.state_dict(), again.state_dict()
    assert weights_digest({k: v for k, v in sd.items() if not k.startswith('vae.')}) == \
           weights_digest({k: v for k, v in sd2.items() if not k.startswith('vae.')}), f'{name}: weights changed in the round trip'
    with torch.no_grad():
        if m.family == 'tokenizer':
            x = _images(model)
            tokens = model.encode_indices(x)
            assert [tuple(t.shape[1:1 + len(g)]) for t, g in zip(tokens, model.token_spec.levels)] == list(model.token_spec.levels)
            y, y2 = model.decode_indices(tokens), again.decode_indices(tokens)
            assert y.shape == x.shape and torch.allclose(y, y2, atol=1e-5), f'{name}: the reloaded model decodes differently'
            torch.testing.assert_close(again.encode_indices(x)[0].float(), tokens[0].float())
        else:
            s, s2 = model.sample(torch.tensor([0, 1]), seed=0).tokens, again.sample(torch.tensor([0, 1]), seed=0).tokens
            assert torch.equal(s, s2), f'{name}: the reloaded generator samples differently'


@pytest.mark.parametrize('name', PRESETS)
def test_one_training_step(name, tmp_path):
    from coda_nb.data.tokens import TokenSequences
    from coda_nb.training.loop import fit
    m, model = _tiny(name)
    fields = {f.name for f in dataclasses.fields(m.train_config)}
    kw = {k: v for k, v in TINY_TRAIN.items() if k in fields} | dict(out=str(tmp_path/'run'))
    if 'image_size' in fields and m.family == 'tokenizer': kw['image_size'] = model.token_spec.image_size
    cfg = m.train_config.from_preset(name, **kw)
    if m.family == 'tokenizer': task = m.task(model)
    else:
        seq = model.sample(torch.arange(8) % 3, seed=0).tokens            # token sequences of the model's own kind
        task = m.task(model, TokenSequences(seq, torch.arange(8) % 3, model.spec))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        r = fit(task, cfg)
    assert r['history'] and torch.isfinite(torch.tensor(r['history'][-1]['loss'])), f'{name}: no finite loss logged'
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, f'{name}: one training step changed no weight'


@pytest.mark.parametrize('name', PRESETS)
def test_other_methods_refuse_it(name):
    own = get_preset(name).model['method']
    for other in list_methods():
        if other in (own, 'toy'): continue
        with pytest.raises(ConfigError, match=rf"'{name}' is a {own} preset, not a {other} one"):
            build(name, method=other)
        tc = get_method(other).train_config
        if tc is not None:
            with pytest.raises(ConfigError, match=rf"is a {own} preset, not a {other} one"):
                tc.from_preset(name)


def test_unknown_model_key_lists_the_valid_ones():
    for method in list_methods():
        name = next((n for n in PRESETS if get_preset(n).model['method'] == method), None)
        if name is None: continue
        with pytest.raises(ConfigError, match='valid keys'):
            build(name, no_such_key=1)
