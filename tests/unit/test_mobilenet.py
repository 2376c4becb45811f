import pytest

from tests.support.paths import WEIGHTS

# Parameter counts of torchvision's mobilenet_v2(width_mult=w): a layout or rounding slip changes them.
TORCHVISION_PARAMS = {0.5: 1_968_680, 0.75: 2_636_424, 1.0: 3_504_872, 1.4: 6_108_776}


@pytest.fixture(scope="module")
def mobilenet(torch_module):
    from edge_infer.export import mobilenet

    return mobilenet


@pytest.mark.parametrize("width", sorted(TORCHVISION_PARAMS))
def test_parameter_counts_match_torchvision(mobilenet, width):
    model = mobilenet.MobileNetV2(width_mult=width)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[width]


@pytest.mark.parametrize("width", [0.3, 1.5])
def test_width_outside_the_papers_range_is_refused(mobilenet, width):
    with pytest.raises(ValueError, match="width_mult"):
        mobilenet.MobileNetV2(width_mult=width)


def test_keys_and_shapes_match_the_torchvision_checkpoint(mobilenet, shared, torch_module):
    state = torch_module.load(WEIGHTS, weights_only=True)
    model = mobilenet.MobileNetV2()
    ours = model.state_dict()
    assert list(ours) == list(state)  # same names in the same order
    assert all(tuple(ours[k].shape) == tuple(v.shape) for k, v in state.items())
    model.load_state_dict(state, strict=True)


def test_residual_blocks_are_where_the_paper_puts_them(mobilenet):
    model = mobilenet.MobileNetV2()
    residual = [i for i, m in enumerate(model.features) if getattr(m, "use_res_connect", False)]
    # Stride-1 repeats of each stage: 2nd of 24, 2nd-3rd of 32, 2nd-4th of 64, 2nd-3rd of 96 and 160.
    assert residual == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]


def test_forward_shape(mobilenet, torch_module):
    model = mobilenet.MobileNetV2(width_mult=0.35, num_classes=7).eval()
    with torch_module.no_grad():
        out = model(torch_module.zeros(2, 3, 96, 96))
    assert tuple(out.shape) == (2, 7)
