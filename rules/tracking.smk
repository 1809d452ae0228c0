# MLflow: initialise the store and open one parent run per workflow invocation before any job
# starts (concurrent first use of a fresh SQLite store crashes); jobs inherit the ids through
# the environment and nest their runs under it. With `tracking: {defer: true}` (the default)
# jobs spool their runs and this process logs them when the invocation ends (and, at start, the
# spools an earlier, killed invocation left). The parent run holds the resolved config, the
# command and the commit (mixlib.provenance), and the aggregate job's tables and figures.
from mixlib import tracking as _tracking

_TRACK = config.get("tracking", {})


def _sync_spool(uri, drop_incomplete=False):
    if not uri:  # the store was never opened (onstart failed)
        return
    n = _tracking.sync_spool(
        uri, _TRACK.get("experiment", "mixlib"), drop_incomplete=drop_incomplete
    )
    if n:
        print(f"MLflow: logged {n} spooled job run(s)")


onstart:
    from mixlib import provenance as _provenance

    _info = _provenance.invocation(workflow.basedir, workflow.configfiles)
    _provenance.write_invocation(INVOCATION, _info)
    if _TRACK.get("enabled", True):
        _uri = _tracking.resolve_uri(_TRACK.get("uri"), os.getcwd())
        _sync_spool(_uri, drop_incomplete=True)
        _inv, _parent = _tracking.start_invocation(
            _uri, _TRACK.get("experiment", "mixlib"), config=config, info=_info
        )
        print(
            f"MLflow: {_uri} experiment {_TRACK.get('experiment', 'mixlib')!r} invocation {_inv}"
        )
        _exp = _tracking.init_store(_uri, _TRACK.get("experiment", "mixlib"))
        print(f"MLflow: its runs in the UI: {_tracking.runs_url(_exp)}")


onsuccess:
    if _TRACK.get("enabled", True):
        _sync_spool(os.environ.get(_tracking.URI_ENV))
        _tracking.end_invocation("FINISHED")


onerror:
    if _TRACK.get("enabled", True):
        _sync_spool(os.environ.get(_tracking.URI_ENV))
        _tracking.end_invocation("FAILED")
