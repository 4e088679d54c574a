import pytest
import torch
from torch import nn

from contrastkit.errors import ConfigError, InputError
from contrastkit.losses import clip_loss, pair_info_nce
from contrastkit.models.grad_cache import cached_embeddings, grad_cache_step

N = 10
CHUNK_SIZES = [1, 3, 4, 5, 10, 16]  # 3 and 4 leave a shorter last chunk; 16 > N is one chunk


def mlp(seed, dropout=0.1, width=16):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, width), nn.Tanh(), nn.Dropout(dropout), nn.Linear(width, 4)).double()


class TokenEncoder(nn.Module):
    """Tokenized text in, one embedding per row out: masked mean of token embeddings, then an MLP
    with dropout. Called with the tokenizer's dict."""

    def __init__(self, seed, vocabulary=20):
        super().__init__()
        torch.manual_seed(seed)
        self.tokens = nn.Embedding(vocabulary, 6, dtype=torch.float64)
        self.head = mlp(seed + 1)

    def forward(self, batch):
        mask = batch["attention_mask"].unsqueeze(-1).double()
        pooled = (self.tokens(batch["input_ids"]) * mask).sum(dim=1) / mask.sum(dim=1)
        return self.head(pooled)


def dense_tower(seed, rows=N):
    return torch.randn(rows, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def token_tower(seed, rows=N, length=7):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (rows,), generator=generator)
    return {"input_ids": torch.randint(0, 20, (rows, length), generator=generator),
            "attention_mask": (torch.arange(length)[None, :] < lengths[:, None]).long()}


def loss_on(embeddings):
    return pair_info_nce(*embeddings, temperature=0.1, symmetric=True)


def gradients(module):
    return {name: parameter.grad.clone() for name, parameter in module.named_parameters()}


def assert_same_gradients(actual, expected):
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-6, atol=1e-10, msg=name)


def plain_step(encoders, towers, loss_fn):
    """The computation GradCache replaces: encode every tower whole, with a graph, and back-propagate."""
    loss = loss_fn([encoder(tower) for encoder, tower in zip(encoders, towers)])
    loss.backward()
    return loss.detach()


def chunkwise_plain_step(encoders, towers, loss_fn, chunk_size):
    """Encode chunk by chunk WITH a graph (all activations held): the same dropout masks, drawn in
    the same order, as GradCache's first pass, so its gradients are what GradCache must give."""
    def chunks(tower):
        if isinstance(tower, torch.Tensor):
            return tower.split(chunk_size)
        return [dict(zip(tower, values)) for values in zip(*(v.split(chunk_size) for v in tower.values()))]
    embeddings = [torch.cat([encoder(chunk) for chunk in chunks(tower)]) for encoder, tower in zip(encoders, towers)]
    loss = loss_fn(embeddings)
    loss.backward()
    return loss.detach()


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_gradients_and_loss_equal_the_plain_step_with_dropout_off(chunk_size):
    towers = [dense_tower(1), dense_tower(2)]
    reference, cached = mlp(0).eval(), mlp(0).eval()
    expected_loss = plain_step([reference] * 2, towers, loss_on)
    loss = grad_cache_step(cached, towers, loss_on, chunk_size=chunk_size)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, expected_loss, rtol=1e-12, atol=0)
    assert_same_gradients(gradients(cached), gradients(reference))


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_dict_towers_and_one_encoder_per_tower(chunk_size):
    # A question tower of tokenized text and a passage tower of dense features, each with its own encoder.
    towers = [token_tower(3), dense_tower(4)]
    reference = [TokenEncoder(5).eval(), mlp(6).eval()]
    cached = [TokenEncoder(5).eval(), mlp(6).eval()]
    expected_loss = plain_step(reference, towers, loss_on)
    loss = grad_cache_step(cached, towers, loss_on, chunk_size=chunk_size)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-12, atol=0)
    for actual, expected in zip(cached, reference):
        assert_same_gradients(gradients(actual), gradients(expected))


@pytest.mark.parametrize("chunk_size", [3, 4, 10])
def test_dropout_masks_of_the_second_pass_are_those_of_the_first(chunk_size):
    # In training mode the gradients equal those of a graph built chunk by chunk from the same seed:
    # each chunk's second forward drew the masks its first one did.
    towers = [token_tower(7), token_tower(8)]
    reference, cached = TokenEncoder(9).train(), TokenEncoder(9).train()
    torch.manual_seed(10)
    expected_loss = chunkwise_plain_step([reference] * 2, towers, loss_on, chunk_size)
    after_reference = torch.rand(3)
    torch.manual_seed(10)
    loss = grad_cache_step(cached, towers, loss_on, chunk_size=chunk_size)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-12, atol=0)
    assert_same_gradients(gradients(cached), gradients(reference))
    # The generator is left where encoding once and computing the loss leaves it.
    assert torch.equal(torch.rand(3), after_reference)
    # The masks did change the gradients: dropout was on.
    evaluated = TokenEncoder(9).eval()
    grad_cache_step(evaluated, towers, loss_on, chunk_size=chunk_size)
    assert not torch.allclose(evaluated.head[0].weight.grad, cached.head[0].weight.grad)


def test_dropout_runs_are_deterministic_for_a_seed():
    towers = [dense_tower(11), dense_tower(12)]
    runs = []
    for _ in range(2):
        encoder = mlp(13).train()
        torch.manual_seed(14)
        runs.append((grad_cache_step(encoder, towers, loss_on, chunk_size=3), gradients(encoder)))
    assert torch.equal(runs[0][0], runs[1][0])
    for name, gradient in runs[0][1].items():
        assert torch.equal(gradient, runs[1][1][name]), name


def test_towers_of_different_sizes_and_a_learnable_loss_parameter():
    # Four hard negatives per pair in a third tower; CLIP's learnable log-scale in the loss.
    towers = [dense_tower(15), dense_tower(16), dense_tower(17, rows=4 * N)]

    def loss_with_scale(logit_scale):
        def loss_fn(embeddings):
            anchors, positives, negatives = embeddings
            return clip_loss(anchors, positives, logit_scale) + pair_info_nce(anchors, positives, negatives=negatives)
        return loss_fn

    reference, cached = mlp(18).eval(), mlp(18).eval()
    scales = [torch.tensor(2.0, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    plain_step([reference] * 3, towers, loss_with_scale(scales[0]))
    grad_cache_step(cached, towers, loss_with_scale(scales[1]), chunk_size=7)
    assert_same_gradients(gradients(cached), gradients(reference))
    torch.testing.assert_close(scales[1].grad, scales[0].grad, rtol=1e-10, atol=0)


def test_a_tower_the_loss_ignores_is_not_encoded_again():
    calls = []

    def encode(tower):
        calls.append(tower.shape[0])
        return encoder(tower)

    encoder = mlp(19).eval()
    towers = [dense_tower(20), dense_tower(21), dense_tower(22, rows=3)]
    grad_cache_step(encode, towers, lambda e: pair_info_nce(e[0], e[1]), chunk_size=4)
    assert calls == [4, 4, 2, 4, 4, 2, 3] + [4, 4, 2, 4, 4, 2]  # first pass of all; second of towers 0, 1


def test_gradients_accumulate_like_backward():
    towers = [dense_tower(23), dense_tower(24)]
    once, twice = mlp(25).eval(), mlp(25).eval()
    grad_cache_step(once, towers, loss_on, chunk_size=4)
    for _ in range(2):
        grad_cache_step(twice, towers, loss_on, chunk_size=4)
    for name, gradient in gradients(once).items():
        torch.testing.assert_close(gradients(twice)[name], 2 * gradient, msg=name)


def _saved_sizes(step):
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
        step()
    return sizes


def test_only_one_chunk_of_activations_is_saved_at_a_time():
    width, rows, chunk_size = 256, 32, 4
    towers = [dense_tower(26, rows), dense_tower(27, rows)]
    plain = _saved_sizes(lambda: plain_step([mlp(28, width=width)] * 2, towers, loss_on))
    cached = _saved_sizes(lambda: grad_cache_step(mlp(28, width=width), towers, loss_on, chunk_size=chunk_size))
    activations = rows * width
    assert max(plain) >= activations
    # One chunk's hidden layer, the parameters (6 x 256, 256 x 4) or the loss's 32 x 32 logits.
    assert max(cached) <= max(chunk_size * width, 6 * width, rows * rows) < activations


@pytest.mark.parametrize("call, error, message", [
    (lambda e: grad_cache_step(e, [dense_tower(0)] * 2, loss_on, chunk_size=0), ConfigError,
     "chunk_size must be >= 1"),
    (lambda e: grad_cache_step(e, dense_tower(0), loss_on, chunk_size=2), InputError,
     r"towers must be a non-empty list or tuple .* got Tensor; wrap a single tower as \[tower\]"),
    (lambda e: grad_cache_step(e, [], loss_on, chunk_size=2), InputError, "towers must be a non-empty list"),
    (lambda e: grad_cache_step(e, [dense_tower(0), {}], loss_on, chunk_size=2), InputError,
     r"towers\[1\] must be a Tensor or a non-empty dict of Tensors .* got an empty dict"),
    (lambda e: grad_cache_step(e, [dense_tower(0), [1, 2]], loss_on, chunk_size=2), InputError,
     r"towers\[1\] must be a Tensor or a non-empty dict"),
    (lambda e: grad_cache_step(e, [{"input_ids": torch.zeros(4, 3), "attention_mask": torch.zeros(5, 3)}],
                               loss_on, chunk_size=2), InputError,
     r"the tensors of towers\[0\] disagree on the number of rows \(4 and 5 in towers\[0\]\['attention_mask'\]\)"),
    (lambda e: grad_cache_step(e, [dense_tower(0, rows=0)], loss_on, chunk_size=2), InputError,
     r"towers\[0\] has no rows"),
    (lambda e: grad_cache_step([e], [dense_tower(0)] * 2, loss_on, chunk_size=2), ConfigError,
     "encode holds 1 encoders for 2 towers"),
    (lambda e: grad_cache_step(lambda x: (e(x),), [dense_tower(0)] * 2, loss_on, chunk_size=2), InputError,
     "encode must return a Tensor of embeddings, got tuple"),
    (lambda e: grad_cache_step(lambda x: e(x)[:1], [dense_tower(0)] * 2, loss_on, chunk_size=2), InputError,
     r"for a chunk of 2 rows of towers\[0\] it returned torch.float64 of shape \(1, 4\)"),
    (lambda e: grad_cache_step(e, [dense_tower(0)] * 2, lambda emb: torch.stack(emb).sum(dim=(1, 2)),
                               chunk_size=2), InputError, r"loss_fn must return a scalar Tensor, got \(2,\)"),
    (lambda e: grad_cache_step(e, [dense_tower(0)] * 2, lambda emb: torch.tensor(1.0), chunk_size=2), InputError,
     "the loss does not depend on the embeddings"),
    (lambda e: grad_cache_step(lambda x: e(x).detach(), [dense_tower(0)] * 2, loss_on, chunk_size=2), ConfigError,
     r"the embeddings of towers\[0\] require no grad in the second pass"),
], ids=["chunk size", "bare tensor", "no towers", "empty dict", "list tower", "ragged dict", "empty tower",
        "encoder count", "tuple output", "wrong rows", "vector loss", "constant loss", "frozen encoder"])
def test_bad_inputs_are_refused(call, error, message):
    with pytest.raises(error, match=message):
        call(mlp(0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_dropout_masks_of_the_second_pass_are_those_of_the_first():
    towers = [dense_tower(29).cuda(), dense_tower(30).cuda()]
    reference, cached = mlp(31).cuda().train(), mlp(31).cuda().train()
    torch.manual_seed(32)
    chunkwise_plain_step([reference] * 2, towers, loss_on, chunk_size=3)
    torch.manual_seed(32)
    grad_cache_step(cached, towers, loss_on, chunk_size=3)
    assert_same_gradients(gradients(cached), gradients(reference))


# ----------------------------------------------------------------------------- cached_embeddings


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_cached_embeddings_give_the_plain_gradients_through_an_ordinary_backward(chunk_size):
    cached, plain = TokenEncoder(seed=1), TokenEncoder(seed=1)
    for module in (cached, plain):
        module.head[2].p = 0.0
    towers = [token_tower(2), token_tower(3)]
    loss = loss_on(cached_embeddings(cached, towers, chunk_size=chunk_size))
    (loss * 1024.0).backward()  # as a GradScaler's scaled backward
    expected_loss = plain_step([plain, plain], towers, lambda e: loss_on(e) * 1024.0)
    torch.testing.assert_close(loss * 1024.0, expected_loss)
    assert_same_gradients(gradients(cached), gradients(plain))


def test_cached_embeddings_replay_each_chunks_dropout_like_grad_cache_step():
    towers = [dense_tower(4), dense_tower(5)]
    through_graph, stepped = mlp(seed=6, dropout=0.3), mlp(seed=6, dropout=0.3)
    torch.manual_seed(7)
    loss_on(cached_embeddings(through_graph, towers, chunk_size=3)).backward()
    after_graph = torch.get_rng_state()
    torch.manual_seed(7)
    grad_cache_step(stepped, towers, loss_on, chunk_size=3)
    assert_same_gradients(gradients(through_graph), gradients(stepped))
    assert torch.equal(after_graph, torch.get_rng_state())  # the backward left the random stream alone


def test_cached_embeddings_refuse_bad_arguments():
    with pytest.raises(ConfigError, match="2 encoders for 1 towers"):
        cached_embeddings([mlp(0), mlp(1)], [dense_tower(0)], chunk_size=2)
    with pytest.raises(Exception, match="chunk_size must be >= 1"):
        cached_embeddings(mlp(0), [dense_tower(0)], chunk_size=0)
