# MLflow: initialise the store and open one parent run per workflow invocation before any job
# starts (concurrent first use of a fresh SQLite store crashes); jobs inherit the ids and the
# tracking settings through the environment and nest their runs under it. With
# `tracking: {defer: true}` (the default) jobs spool their runs and this process logs them when
# the invocation ends (and, at start, the spools an earlier, killed invocation left). The parent
# run holds the resolved config, the command and the commit (mixlib.provenance), and the
# aggregate job's tables and figures.
from mixlib import tracking as _tracking

_TRACK = PLAN.tracking


def _sync_spool(uri, drop_incomplete=False):
    if not uri:  # the store was never opened (onstart failed)
        return
    n = _tracking.sync_spool(uri, _TRACK.experiment, drop_incomplete=drop_incomplete)
    if n:
        print(f"MLflow: logged {n} spooled job run(s)")


onstart:
    from mixlib import provenance as _provenance

    _info = _provenance.invocation(workflow.basedir, workflow.configfiles)
    _provenance.write_invocation(INVOCATION, _info)
    _uri = (
        _tracking.resolve_uri(_TRACK.uri, os.getcwd()) if _TRACK.enabled else None
    )
    _tracking.export_job_settings(
        _TRACK.enabled, _uri, _TRACK.experiment, _TRACK.defer
    )
    if _TRACK.enabled:
        _sync_spool(_uri, drop_incomplete=True)
        _inv, _parent = _tracking.start_invocation(
            _uri, _TRACK.experiment, config=PLAN.config, info=_info
        )
        print(f"MLflow: {_uri} experiment {_TRACK.experiment!r} invocation {_inv}")
        _exp = _tracking.init_store(_uri, _TRACK.experiment)
        print(f"MLflow: its runs in the UI: {_tracking.runs_url(_exp)}")


onsuccess:
    if _TRACK.enabled:
        _sync_spool(os.environ.get(_tracking.URI_ENV))
        _tracking.end_invocation("FINISHED")


onerror:
    if _TRACK.enabled:
        _sync_spool(os.environ.get(_tracking.URI_ENV))
        _tracking.end_invocation("FAILED")
