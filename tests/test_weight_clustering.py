"""k-means weight sharing (compression/weight_clustering.py) and Huffman coding (compression/huffman.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compression import export, huffman
from compression import weight_clustering as wc
from compression.packed_export import decode_packed, encode_packed
from experiments import train
from tests.helpers import tiny_config

RNG = np.random.default_rng(0)


def test_huffman_lengths_size_and_round_trip_on_a_hand_case():
    symbols = np.array([0, 0, 0, 0, 1, 1, 2, 3])  # counts 4, 2, 1, 1
    used, lengths = huffman.code_lengths(symbols)
    assert used.tolist() == [0, 1, 2, 3] and lengths.tolist() == [1, 2, 3, 3]
    assert huffman.canonical_codes(lengths).tolist() == [0b0, 0b10, 0b110, 0b111]
    assert huffman.coded_bits(symbols, used, lengths) == 4 * 1 + 2 * 2 + 3 + 3
    stream, used, lengths = huffman.encode(symbols)
    assert np.unpackbits(stream).tolist()[:14] == [0, 0, 0, 0, 1, 0, 1, 0, 1, 1, 0, 1, 1, 1]
    assert stream.size == 2  # 14 bits
    assert huffman.decode(stream, used, lengths, 8).tolist() == symbols.tolist()


@pytest.mark.parametrize("alphabet,n", [(1, 50), (2, 1000), (16, 5000), (300, 3000)])
def test_huffman_decodes_bit_for_bit_in_exactly_the_formula_s_bits(alphabet, n):
    symbols = np.minimum(RNG.geometric(0.3, size=n) - 1, alphabet - 1) * 7  # skewed, not 0..k-1
    stream, used, lengths = huffman.encode(symbols)
    bits = huffman.coded_bits(symbols, used, lengths)
    assert stream.size == -(-bits // 8)
    np.testing.assert_array_equal(huffman.decode(stream, used, lengths, n), symbols)
    # Never more than the fixed width of the used alphabet, and the code is prefix-free.
    assert bits <= n * max(1, int(np.ceil(np.log2(len(used)))))
    codes = [format(c, f"0{n_}b") for c, n_ in zip(huffman.canonical_codes(lengths), lengths)]
    assert not any(a != b and b.startswith(a) for a in codes for b in codes)


def test_a_truncated_huffman_stream_is_an_error():
    stream, used, lengths = huffman.encode(np.arange(64) % 5)
    with pytest.raises(ValueError, match="truncated"):
        huffman.decode(stream[:2], used, lengths, 64)


def test_kmeans_from_linear_initialisation_on_a_hand_case():
    np.testing.assert_allclose(wc.linear_centroids(np.array([-1.0, 3.0, 0.5]), 3), [-1.0, 1.0, 3.0])
    centroids, assignments = wc.kmeans_1d(np.array([0.0, 1.0, 10.0, 11.0]), 2)
    np.testing.assert_allclose(centroids, [0.5, 10.5])
    assert assignments.tolist() == [0, 0, 1, 1]


def test_nearest_centroid_by_bisection_matches_the_distance_matrix():
    values = RNG.normal(size=2000)
    for k in (1, 2, 7, 64):
        centroids = RNG.normal(size=k)
        found = wc.nearest(values, centroids)
        np.testing.assert_array_equal(np.abs(values - centroids[found]),
                                      np.abs(values[:, None] - centroids[None, :]).min(axis=1))
    assert wc.nearest(np.array([0.5]), np.array([1.0, 0.0])).tolist() == [1]  # halfway: the smaller centroid


def _clustered(w, bits=2, **settings):
    t = wc.cluster("Dense_0/kernel", bits=bits, **settings)
    trainable, state = t.init({"Dense_0": {"kernel": jnp.asarray(w)}})
    return t, trainable, state


def test_clustering_leaves_at_most_two_to_the_bits_values_and_pruned_weights_stay_zero():
    w = RNG.normal(size=(20, 10)).astype(np.float32)
    w[w < -0.5] = 0.0  # pruned
    t, trainable, state = _clustered(w, bits=2)
    assert set(trainable) == {"params", "centroids"} and "Dense_0" not in trainable["params"]
    effective = np.asarray(t.apply(trainable, state)["Dense_0"]["kernel"])
    assert len(np.unique(effective[w != 0])) <= 4
    np.testing.assert_array_equal(effective[w == 0], 0.0)
    assert np.all(np.asarray(state["Dense_0/kernel"]["assignments"])[w == 0] == -1)


def test_a_centroid_s_gradient_is_the_sum_of_its_weights_gradients():
    w = RNG.normal(size=(6, 5)).astype(np.float32)
    t, trainable, state = _clustered(w, bits=2)
    g = RNG.normal(size=w.shape).astype(np.float32)
    grads = jax.grad(lambda tr: jnp.sum(t.apply(tr, state)["Dense_0"]["kernel"] * g))(trainable)
    assignments = np.asarray(state["Dense_0/kernel"]["assignments"])
    expected = [g[assignments == c].sum() for c in range(4)]
    np.testing.assert_allclose(np.asarray(grads["centroids"]["Dense_0/kernel"]), expected, rtol=1e-5)


def test_bad_cluster_settings_are_refused_naming_the_setting():
    for bad in (0, 9, 2.5, True):
        with pytest.raises(ValueError, match="cluster.bits .* must be an integer from 1 to 8"):
            wc.cluster(bits=bad)
    with pytest.raises(ValueError, match="cluster.iterations"):
        wc.cluster(iterations=-1)
    with pytest.raises(ValueError, match="every weight of Dense_0/kernel is zero"):
        _clustered(np.zeros((3, 3), np.float32))


def test_packed_codebook_with_huffman_decodes_exactly_and_is_smaller_when_the_codes_are_skewed():
    codebook = np.array([-0.5, -0.1, 0.1, 0.5], np.float32)
    codes = np.minimum(RNG.geometric(0.5, size=4000) - 1, 3).astype(np.uint32)
    values = codebook[codes]
    values[RNG.random(4000) < 0.9] = 0.0  # pruned: the sparse layout stores the rest
    plain, plain_record = encode_packed(values, codes=codes, bits=2, codebook=codebook)
    coded, record = encode_packed(values, codes=codes, bits=2, codebook=codebook, huffman=True)
    assert set(record["huffman"]) == ({"codes", "gaps"} if "gaps" in plain else {"codes"})
    assert sum(t.nbytes for t in coded.values()) < sum(t.nbytes for t in plain.values())
    full = {**record, "shape": [4000], "dtype": "float32"}
    np.testing.assert_array_equal(decode_packed(coded, full), values)


def test_under_huffman_the_layout_is_chosen_by_its_coded_size_so_relative_indices_win_at_deep_compression_density():
    # LeNet-300-100's first kernel after pruning: 12 % kept, whole input rows (border pixels) pruned, so some
    # gaps exceed 255 and 8-bit relative indices need skips. At fixed width 8-bit gaps (8 bits a kept weight
    # and a few skips) just beat the bitmap (8.3); Huffman-coded, relative indices take about 4.5 bits.
    codebook = np.array([-0.3, -0.2, -0.1, 0.05, 0.1, 0.2, 0.3, 0.4], np.float32)
    codes = RNG.integers(0, 8, size=(784, 300)).astype(np.uint32)
    values = codebook[codes]
    values[RNG.random((784, 300)) >= 0.12] = 0.0
    values[:2] = 0.0  # two all-pruned input rows: a gap of more than 600
    nbytes = lambda tensors: sum(t.nbytes for t in tensors.values())
    plain, plain_record = encode_packed(values, codes=codes, bits=3, codebook=codebook)
    assert plain_record["index"] == "gaps8"
    coded, record = encode_packed(values, codes=codes, bits=3, codebook=codebook, huffman=True)
    assert record["index"] in ("gaps8", "gaps16") and set(record["huffman"]) == {"codes", "gaps"}
    each = {index: nbytes(encode_packed(values, codes=codes, bits=3, codebook=codebook, huffman=True, index=index)[0])
            for index in ("bitmap", "gaps8", "gaps16")}  # dense cannot say zero with these centroids
    assert nbytes(coded) == min(each.values()) < 0.8 * each["bitmap"]
    np.testing.assert_array_equal(decode_packed(coded, {**record, "shape": [784, 300], "dtype": "float32"}), values)


def test_a_codebook_without_zero_takes_a_relative_index_whose_long_gaps_are_skipped_without_a_code():
    # Deep Compression stores a filler zero weight in a gap too long for the index; k-means centroids
    # have no zero to store, so the skips carry no code at all.
    codebook = np.array([0.25, 0.75], np.float32)
    values = np.zeros(3000, np.float32)
    kept = np.r_[np.arange(5, 400, 7), np.arange(2900, 3000, 9)]  # then a gap of 2,503 (9 skips of 255)
    values[kept] = 0.75
    codes = (values == 0.75).astype(np.uint32)
    tensors, record = encode_packed(values, codes=codes, bits=1, codebook=codebook)
    assert record["index"] == "gaps8"
    assert len(tensors["gaps"]) == len(kept) + 9 and np.count_nonzero(tensors["gaps"] == 0) == 9
    np.testing.assert_array_equal(decode_packed(tensors, {**record, "shape": [3000], "dtype": "float32"}), values)


def test_a_clustered_run_exports_huffman_coded_codes_that_reload_as_trained(tmp_path):
    config = tiny_config(num_steps=4, checkpoint_every=100)
    config.compression.stages = [{"technique": "cluster", "select": ".*kernel", "bits": 3, "huffman": True}]
    results = train.train_and_evaluate(config, str(tmp_path), progress=False)
    assert results["compression"]["export_max_abs_logit_diff"] <= 1e-5
    record = export.read_header(str(tmp_path / "export" / "params.safetensors"))["params"]["Dense_0/kernel"]
    assert record["codec"] == "packed" and record["bits"] == 3 and set(record["huffman"]) >= {"codes"}
