"""The Ray launcher's parts that need no cluster: the [launch] checks, node
names, the shared-run-directory check, the endpoints, the launcher choice and
the supervisor's handle on an actor (over a stand-in for the ray module).
The two-host runs are in test_ray_cluster.py."""

from __future__ import annotations

import re

import sys
import tomllib
import types
from pathlib import Path

import pytest

from constellation.protocol import config as config_mod
from constellation.protocol.transport import Link
from launch import cli
from launch import ray_launcher as rl
from launch.supervisor import Supervisor, SupervisorError
from launch.up import supervisor_class

ROLES = ["coordinator", "generator", "verifier", "critic", "trainer"]
NODES = [{"NodeID": "id-a", "Alive": True, "NodeManagerAddress": "10.77.0.1", "Labels": {"host": "a"}},
         {"NodeID": "id-b", "Alive": True, "NodeManagerAddress": "10.77.0.2", "Labels": {"host": "b", "gpu": "h100"}},
         {"NodeID": "id-c", "Alive": False, "NodeManagerAddress": "10.77.0.3", "Labels": {"host": "c"}}]


def _cfg(*sets: str) -> config_mod.Config:
    return config_mod.load("smoke", ['launch.launcher="ray"', 'run.transport="tcp"', *sets])


def test_launch_tables_round_trip_through_the_saved_config():
    cfg = _cfg('launch.node={generator = "10.0.0.2", critic = "gpu=h100"}', "launch.num_gpus={generator = 1}")
    again = config_mod.from_dict(tomllib.loads(config_mod.to_toml(cfg)))
    assert again == cfg and again.launch.num_gpus == {"generator": 1.0}


@pytest.mark.parametrize("sets,named", [
    (['launch.num_gpus={genrator = 1}'], "genrator"),
    (['launch.num_cpus={trainer = -1}'], "launch.num_cpus[trainer]"),  # refused by the config's bounds
    (['launch.node={coordinator = "10.0.0.1"}'], "launch.node.coordinator"),
    (['run.transport="ipc"'], "run.transport"),
])
def test_a_bad_launch_table_is_one_error_naming_the_value(sets, named):
    with pytest.raises((SupervisorError, config_mod.ConfigError), match=re.escape(named)):
        rl.check_launch(_cfg(*sets), ROLES)


def test_a_good_launch_table_passes():
    rl.check_launch(_cfg('launch.node={generator = "10.0.0.2"}', "launch.num_cpus={trainer = 2}"), ROLES)


@pytest.mark.parametrize("spec,node_id", [("10.77.0.2", "id-b"), ("host=a", "id-a"), ("gpu = h100", "id-b")])
def test_a_node_is_named_by_ip_or_label(spec, node_id):
    assert rl.node_id_of(spec, NODES) == node_id


@pytest.mark.parametrize("spec", ["10.77.0.3", "host=c", "10.9.9.9", "gpu=a100"])
def test_a_dead_or_unknown_node_is_an_error_listing_the_alive_ones(spec):
    with pytest.raises(SupervisorError, match="10.77.0.1") as e:
        rl.node_id_of(spec, NODES)
    assert "'host': 'c'" not in str(e.value)  # the dead node is not offered


def test_a_node_that_does_not_see_the_run_directory_refuses_to_start(tmp_path):
    with pytest.raises(SupervisorError, match=str(tmp_path / "absent")):
        rl.check_run_dir(tmp_path / "absent", "abc")
    (tmp_path / rl.LAUNCH_ID).write_text("other-run")
    with pytest.raises(SupervisorError, match="another run"):
        rl.check_run_dir(tmp_path, "abc")
    (tmp_path / rl.LAUNCH_ID).write_text("abc\n")
    rl.check_run_dir(tmp_path, "abc")


def test_cluster_endpoints_bind_on_the_named_host():
    endpoints = rl.cluster_endpoints("127.0.0.1")
    assert set(endpoints) == {"hub", "lifecycle"} and len(set(endpoints.values())) == 2
    links = [Link("pull", endpoint, bind=True) for endpoint in endpoints.values()]
    assert all(e.startswith("tcp://127.0.0.1:") for e in endpoints.values())
    for link in links:
        link.close()


def test_the_launcher_is_chosen_by_the_config():
    assert supervisor_class(config_mod.load("smoke")) is Supervisor
    assert supervisor_class(_cfg()) is rl.RaySupervisor
    with pytest.raises(config_mod.ConfigError, match='launch.launcher = "slurm".*allowed: one of "local", "ray"'):
        config_mod.load("smoke", ['launch.launcher="slurm"'])


def test_the_ray_launcher_without_ray_installed_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(SupervisorError, match=r"pip install -e '\.\[ray\]'"):
        rl.RaySupervisor(_cfg(), tmp_path)


def test_up_with_the_ray_launcher_over_ipc_is_exit_2_before_anything_starts(capsys, tmp_path):
    code = cli.main(["up", "--preset", "smoke", "--launcher", "ray", "--set", f'run.runs_dir="{tmp_path}"',
                     "--set", 'run.transport="ipc"'])
    out, err = capsys.readouterr()
    import importlib.util

    named = "run.transport" if importlib.util.find_spec("ray") else 'launch.launcher = "ray" needs ray'
    assert code == 2 and named in out + err
    assert not list(tmp_path.iterdir())  # refused before a run directory exists


def test_up_rejects_an_unknown_launcher(capsys):
    assert cli.main(["up", "--launcher", "slurm"]) == 2


# -- the supervisor's handle on an actor, over a stand-in for the ray module --------------------

class _ActorError(Exception):
    pass


class _FakeRay:
    """Each ``actor.state.remote()`` returns the next of ``states`` (a dict, or an
    exception the call fails with); ``alive`` is whether Ray keeps the actor's name."""

    def __init__(self, states: list) -> None:
        self.states, self.alive, self.killed = list(states), True, []
        self.exceptions = types.SimpleNamespace(RayActorError=_ActorError, GetTimeoutError=TimeoutError)

    def wait(self, refs, timeout):
        return refs, []

    def get(self, ref, timeout=None):
        if isinstance(ref, Exception):
            raise ref
        return ref

    def get_actor(self, name, namespace=None):
        if not self.alive:
            raise ValueError(f"no actor {name}")
        return object()

    def kill(self, actor, no_restart=True):
        self.killed.append(no_restart)


def _role(fake: _FakeRay, log: Path) -> rl.RayRole:
    actor = types.SimpleNamespace(state=types.SimpleNamespace(remote=lambda: fake.states.pop(0)))
    return rl.RayRole(fake, actor, "run-generator", log)


def _state(pid: int, node: str = "10.77.0.2", code=None) -> dict:
    return {"pid": pid, "node": node, "code": code}


def test_a_new_incarnation_counts_as_one_restart(tmp_path):
    fake = _FakeRay([_state(10), _state(10), _ActorError("node lost"), _state(20, "10.77.0.1"), _state(20)])
    role = _role(fake, tmp_path / "generator.log")
    assert [role.poll() for _ in range(4)] == [None] * 4
    assert (role.restarts, role.pid, role.node) == (1, 20, "10.77.0.1")


def test_an_actor_ray_gave_up_on_is_an_exit_with_its_reason_in_the_log(tmp_path):
    fake = _FakeRay([_state(10), _ActorError("max_restarts used up")])
    role = _role(fake, tmp_path / "generator.log")
    fake.alive = False
    assert role.poll() is None and role.poll() == 1
    assert "max_restarts used up" in (tmp_path / "generator.log").read_text()


def test_a_clean_exit_of_the_role_is_exit_0(tmp_path):
    role = _role(_FakeRay([_state(10), _state(10, code=0)]), tmp_path / "g.log")
    assert role.poll() is None and role.poll() == 0


def test_restart_has_ray_restart_the_actor_and_kill_does_not(tmp_path):
    fake = _FakeRay([_state(10), _state(10)])
    role = _role(fake, tmp_path / "g.log")
    role.restart()
    role.kill()
    assert fake.killed == [False, True] and role.poll() < 0
