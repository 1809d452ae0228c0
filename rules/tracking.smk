# MLflow: initialise the store and open one parent run per workflow invocation before any job
# starts (concurrent first use of a fresh SQLite store crashes); jobs inherit the ids through
# the environment and nest their runs under it.
from mixlib import tracking as _tracking

_TRACK = config.get("tracking", {})


onstart:
    if _TRACK.get("enabled", True):
        _uri = _tracking.resolve_uri(_TRACK.get("uri"), os.getcwd())
        _inv, _parent = _tracking.start_invocation(
            _uri, _TRACK.get("experiment", "mixlib"), description=" ".join(sys.argv)
        )
        print(
            f"MLflow: {_uri} experiment {_TRACK.get('experiment', 'mixlib')!r} invocation {_inv}"
        )


onsuccess:
    if _TRACK.get("enabled", True):
        _tracking.end_invocation("FINISHED")


onerror:
    if _TRACK.get("enabled", True):
        _tracking.end_invocation("FAILED")
