"""One naming scheme across the public API: conditioner options, the importance-sample count `k`, and models that build the
dequantization they are asked for (issue 19, section 3). Cheap: constructors and signatures only, no training."""
import inspect, warnings

import pytest
import torch
from torch import nn

import flownb
from flownb.core import Transform
from flownb.nn import conv_net
from flownb.flowify import FlowConv2d
from flownb.surjections import MaxPool2d
from flownb.funnels import CroppingConvFunnel
from flownb.dequantization import UniformDequantization, VariationalDequantization, FlowDequantization
from flownb.models import MODELS, create_model, register_model, DEQUANTIZATIONS
from flownb.train import TrainConfig


def public_callables():
    "Every class and function `import flownb` exposes, with the layers' constructors"
    for name in dir(flownb):
        obj = getattr(flownb, name)
        if inspect.isclass(obj) or inspect.isfunction(obj): yield name, obj


def parameters(obj):
    return inspect.signature(obj.__init__ if inspect.isclass(obj) else obj).parameters


def test_one_name_for_the_conditioner_width():
    "No public constructor or function takes `hidden_channels`; whatever takes a width calls it `hidden_features`"
    old = [name for name, obj in public_callables() if 'hidden_channels' in parameters(obj)]
    assert old == []
    wide = sorted(name for name, obj in public_callables() if 'hidden_features' in parameters(obj))
    assert {'FlowConv2d', 'MaxPool2d', 'CroppingConvFunnel', 'conv_net', 'FlowLinear', 'AffineCoupling', 'Abs'} <= set(wide)


def test_every_conditioner_width_comes_with_its_depth():
    "A layer whose network width is an option also takes its number of hidden layers (none hard-codes 2)"
    lacking = [name for name, obj in public_callables() if inspect.isclass(obj) and issubclass(obj, Transform)
               and 'hidden_features' in parameters(obj) and 'num_layers' not in parameters(obj)]
    assert lacking == []


def test_one_default_width():
    "The conditioner width defaults to 64 everywhere, but for the Funnels paper's layers, which take the paper's 128"
    defaults = {name: parameters(obj)['hidden_features'].default for name, obj in public_callables() if 'hidden_features' in parameters(obj)}
    paper = {'StridedConvFunnel', 'LinearFunnel'}
    assert {n: d for n, d in defaults.items() if n not in paper and d != 64} == {}
    assert {defaults[n] for n in paper} == {128}


@pytest.mark.parametrize('build', [lambda **o: FlowConv2d(1, 2, 3, **o), lambda **o: MaxPool2d(1, 2, **o),
                                   lambda **o: CroppingConvFunnel(2, 1, 3, **o), lambda **o: conv_net(2, 3, **o)],
                         ids=['FlowConv2d', 'MaxPool2d', 'CroppingConvFunnel', 'conv_net'])
def test_the_old_name_still_works_and_says_the_new_one(build):
    with pytest.warns(DeprecationWarning, match="'hidden_channels' is now called 'hidden_features'"):
        old = build(hidden_channels=8)
    new = build(hidden_features=8)
    assert [p.shape for p in old.parameters()] == [p.shape for p in new.parameters()]
    with pytest.raises(TypeError, match="pass only 'hidden_features'"): build(hidden_channels=8, hidden_features=8)


@pytest.mark.parametrize('name', [n for n in MODELS if MODELS[n].shapes is None and MODELS[n].data != 'points'])   # point sets are continuous
def test_models_build_the_dequantization_asked_for(name):
    "Every registry builder builds its own front: the dequantizer asked for is its first layer (no layer swapped in afterwards)"
    kinds = dict(zip(DEQUANTIZATIONS, (UniformDequantization, VariationalDequantization, FlowDequantization)))
    assert MODELS[name].takes_dequantization
    for dequantization, kind in kinds.items():
        first = create_model(name, (1, 8, 8), 17, dequantization=dequantization).transform.transforms[0]
        assert type(first) is kind, (dequantization, type(first).__name__)


def test_a_builder_without_a_dequantization_option_is_refused_a_learned_one():
    "A user's builder that does not name `dequantization` builds its own front: asking for a learned one is an error, not a swap"
    @register_model('conventions-plain', 'a user model whose first layer is not a dequantizer')
    def plain(shape, bins, **_):
        return flownb.Flow(flownb.StandardNormal(4), [flownb.Flatten((1, 2, 2))])
    try:
        assert type(create_model('conventions-plain', (1, 2, 2), None).transform.transforms[0]).__name__ == 'Flatten'
        with pytest.raises(ValueError, match="its builder takes no dequantization option"):
            create_model('conventions-plain', (1, 2, 2), 17, dequantization='flow')
    finally:
        MODELS.pop('conventions-plain')


def test_k_none_is_the_elbo():
    "`eval_k`, like `Flow.log_prob`'s `k`, is None for the ELBO; the command line's 0 is mapped to None there and only there"
    assert TrainConfig().eval_k is None
    TrainConfig(eval_k=None).validate(); TrainConfig(eval_k=16).validate()
    with pytest.raises(ValueError, match="None is the ELBO; 0 is only the command line's spelling of it"): TrainConfig(eval_k=0).validate()
    with pytest.raises(ValueError, match='eval_k must be a positive number'): TrainConfig(eval_k=-3).validate()


@pytest.mark.parametrize('k, expected', [(0, None), (8, 8)])
def test_the_command_line_maps_k_zero_to_none(k, expected, monkeypatch, tmp_path):
    import flownb.cli as cli
    seen = {}
    monkeypatch.setattr(cli, 'train', lambda config, *a, **kw: seen.setdefault('config', config) and None)
    cli.train_cmd(model='gaussian', out=str(tmp_path / 'run'), k=k, quiet=True)
    assert seen['config'].eval_k == expected


def test_the_command_line_refuses_a_negative_k(tmp_path):
    import flownb.cli as cli
    with pytest.raises(ValueError, match=r'--k must be >= 0 \(0: the ELBO only\), got -1'):
        cli.train_cmd(model='gaussian', out=str(tmp_path / 'run'), k=-1, quiet=True)


def test_callable_modules_show_their_function_signature():
    "flownb.train and flownb.flowify are modules one can call; inspect.signature shows the function's parameters, not (*args, **kwargs)"
    import inspect
    import flownb
    assert list(inspect.signature(flownb.train).parameters)[:3] == ['config', 'out', 'resume']
    assert 'module' in inspect.signature(flownb.flowify).parameters
