"""The episode replay buffer: window sampling, alignment, ring overwrite, persistence, shape checks."""

from __future__ import annotations

import numpy as np
import pytest

from tdmpc2_ros.core.buffer import ReplayBuffer

H = 3


def make_episode(ep: int, T: int, action_dim: int = 2):
    """obs_k = (ep, k, 0); a_k = (ep, k) ... ; r_k = 1000 * ep + k: every entry names where it came from."""
    k = np.arange(T + 1, dtype=np.float32)
    obs = np.stack([np.full(T + 1, ep, np.float32), k, np.zeros(T + 1, np.float32)], axis=1)
    action = np.stack([np.full(T, ep, np.float32), k[:T]] + [np.zeros(T, np.float32)] * (action_dim - 2), axis=1)
    reward = 1000.0 * ep + k[:T]
    return obs, action, reward


def fill(buf: ReplayBuffer, lengths, first_id: int = 0):
    for i, T in enumerate(lengths):
        buf.add_episode(*make_episode(first_id + i, T))


def check_windows(obs, action, reward, terminated=None):
    """Every window lies inside one episode, in consecutive steps, with row k holding a_{k-1}, r_{k-1}."""
    Hp1, B, _ = obs.shape
    assert action.shape == (Hp1 - 1, B, 2) and reward.shape == (Hp1 - 1, B, 1)
    ep, step = obs[..., 0], obs[..., 1]
    assert np.all(ep == ep[0:1]), "a window crosses an episode boundary"
    assert np.all(np.diff(step, axis=0) == 1), "a window skips or repeats a step"
    assert np.all(obs[..., 2] == 0)
    # The action and reward taken *from* o_t (stored in row t+1) are a_t and r_t.
    assert np.all(action[..., 0] == ep[:-1]) and np.all(action[..., 1] == step[:-1])
    assert np.all(reward[..., 0] == 1000.0 * ep[:-1] + step[:-1])
    assert np.all(np.isfinite(action)) and np.all(np.isfinite(reward))
    if terminated is not None:
        assert terminated.shape == reward.shape


def test_storage_layout_row_k_holds_previous_action_and_reward():
    buf = ReplayBuffer(100, 3, 2, H)
    obs, action, reward = make_episode(4, 6)
    buf.add_episode(obs, action, reward)
    assert len(buf) == 6 and buf.size == 7 and buf.num_episodes == 1
    np.testing.assert_array_equal(buf.obs[:7], obs)
    assert np.all(np.isnan(buf.action[0])) and np.isnan(buf.reward[0])
    np.testing.assert_array_equal(buf.action[1:7], action)
    np.testing.assert_array_equal(buf.reward[1:7], reward)
    np.testing.assert_array_equal(buf.step[:7], np.arange(7))


def test_windows_never_cross_episode_boundaries():
    buf = ReplayBuffer(1000, 3, 2, H, seed=1)
    # Includes episodes shorter than a window (T < H): they must never be sampled.
    fill(buf, [10, 2, 7, 3, 1, 25, 4])
    for _ in range(20):
        obs, action, reward, term = buf.sample(64)
        assert obs.shape == (H + 1, 64, 3)
        check_windows(obs, action, reward, term)
        assert not np.any(np.isin(obs[0, :, 0], [1, 4])), "sampled an episode shorter than the horizon"
    # Every valid start is reachable: over many draws all (episode, start) pairs appear.
    seen = set()
    for _ in range(200):
        obs = buf.sample(64)[0]
        seen.update(zip(obs[0, :, 0].astype(int).tolist(), obs[0, :, 1].astype(int).tolist()))
    expected = {(e, s) for e, T in enumerate([10, 2, 7, 3, 1, 25, 4]) for s in range(T - H + 1)}
    assert seen == expected


def test_terminated_flags_are_aligned_with_rewards():
    buf = ReplayBuffer(100, 3, 2, H, seed=2)
    obs, action, reward = make_episode(0, 5)
    term = np.array([0, 0, 0, 0, 1], np.float32)
    buf.add_episode(obs, action, reward, term)
    o, a, r, t = buf.sample(32)
    # terminated row t belongs to the transition out of o_t: only the last transition (step 4) is terminal.
    np.testing.assert_array_equal(t[..., 0], (o[:-1, :, 1] == 4).astype(np.float32))


def test_ring_overwrite_keeps_sampling_valid():
    buf = ReplayBuffer(50, 3, 2, H, seed=3)
    lengths = [9, 12, 6, 15, 8, 11, 7, 13, 10, 5, 14]  # far more than 50 rows: wraps several times
    for i, T in enumerate(lengths):
        buf.add_episode(*make_episode(i, T))
        assert buf.size <= 50
        if buf.size >= 12:
            obs, action, reward, term = buf.sample(48)
            check_windows(obs, action, reward, term)
            # Only episodes whose rows are still in the ring can be sampled.
            alive = set(buf.episode[: buf.size].tolist())
            assert set(obs[0, :, 0].astype(int).tolist()) <= alive
    assert buf.size == 50
    # The newest episode is entirely present, the oldest ones are gone.
    assert 10 in set(buf.episode.tolist())
    assert 0 not in set(buf.episode.tolist())


def test_partially_overwritten_episode_keeps_its_intact_suffix():
    buf = ReplayBuffer(20, 3, 2, H, seed=4)
    buf.add_episode(*make_episode(0, 14))  # rows 0..14
    buf.add_episode(*make_episode(1, 7))  # rows 15..19, 0..2: overwrites steps 0..2 of episode 0
    assert set(buf.episode.tolist()) == {0, 1}
    for _ in range(10):
        obs, action, reward, term = buf.sample(64)
        check_windows(obs, action, reward, term)
        starts0 = obs[0, obs[0, :, 0] == 0, 1]
        assert np.all(starts0 >= 3)


def test_state_dict_round_trip_reproduces_next_sample():
    a = ReplayBuffer(64, 3, 2, H, seed=5)
    fill(a, [9, 12, 20, 6, 15])  # wraps
    a.sample(16)  # advance the generator
    state = a.state_dict()
    expected = a.sample(16)
    b = ReplayBuffer(64, 3, 2, H, seed=999)
    b.load_state_dict(state)
    got = b.sample(16)
    for x, y in zip(expected, got):
        np.testing.assert_array_equal(x, y)
    assert (b.cursor, b.size, b.num_episodes, len(b)) == (a.cursor, a.size, a.num_episodes, len(a))
    # The state is a snapshot: sampling from or adding to the source later does not change it.
    snapshot = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()}
    a.add_episode(*make_episode(5, 10))
    a.sample(8)
    for k, v in snapshot.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(state[k], v)
    c = ReplayBuffer(64, 3, 2, H, seed=0)
    c.load_state_dict(state)
    for x, y in zip(expected, c.sample(16)):
        np.testing.assert_array_equal(x, y)


def test_load_state_dict_refuses_other_capacity():
    a = ReplayBuffer(64, 3, 2, H)
    fill(a, [10])
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(32, 3, 2, H).load_state_dict(a.state_dict())


@pytest.mark.parametrize(
    "obs_shape, action_shape, reward_shape",
    [
        ((6, 4), (5, 2), (5,)),  # wrong obs_dim
        ((5, 3), (5, 2), (5,)),  # T observations for T actions
        ((6, 3), (5, 2), (4,)),  # reward too short
        ((5, 3), (4, 3), (4,)),  # wrong action_dim
        ((5, 3), (4,), (4,)),  # action_dim 1 given for 2
    ],
)
def test_bad_shapes_raise_value_error_naming_the_spec(obs_shape, action_shape, reward_shape):
    buf = ReplayBuffer(100, 3, 2, H)
    with pytest.raises(ValueError) as e:
        buf.add_episode(np.zeros(obs_shape), np.zeros(action_shape), np.zeros(reward_shape))
    msg = str(e.value)
    assert "obs_dim=3" in msg and "action_dim=2" in msg
    assert buf.size == 0 and buf.num_episodes == 0


def test_episode_longer_than_capacity_raises():
    buf = ReplayBuffer(10, 3, 2, H)
    with pytest.raises(ValueError, match="capacity 10"):
        buf.add_episode(*make_episode(0, 10))


def test_sampling_errors():
    buf = ReplayBuffer(100, 3, 2, H)
    with pytest.raises(RuntimeError, match="empty"):
        buf.sample(4)
    fill(buf, [2, 1])  # nothing as long as the horizon
    with pytest.raises(RuntimeError, match="horizon"):
        buf.sample(4)


def test_bad_terminated_shape_leaves_a_full_ring_untouched():
    """A malformed `terminated` must be refused before anything is written.

    add_episode checks obs/action/reward shapes but not `terminated`; a wrong length fails only at
    the final assignment, after obs, action and reward rows were already written at the cursor.
    In a full ring those rows belong to the oldest stored episode, whose episode/step labels stay
    in place: later windows pair its labels with the rejected episode's data.
    """
    buf = ReplayBuffer(30, 3, 2, H, seed=6)
    fill(buf, [9, 9, 9])  # exactly full: cursor back at row 0
    assert buf.size == 30 and buf.cursor == 0
    before = {k: getattr(buf, k).copy() for k in ("obs", "action", "reward", "terminated", "episode", "step")}
    obs, action, reward = make_episode(7, 5)
    with pytest.raises(ValueError):
        buf.add_episode(obs, action, reward, terminated=np.zeros(6, np.float32))  # T + 1 flags for T = 5
    for k, v in before.items():
        np.testing.assert_array_equal(getattr(buf, k), v, err_msg=f"buffer.{k} changed by a rejected episode")
