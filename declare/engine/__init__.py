"""`skyform.engine`: the stack engine, what `plan`, `apply` and `destroy` are made of.

`stackfile` reads the stack file; `refresh` checks the state against what
runs; `planner` builds a `plan.Plan` (the model: `Action`, `ResourceChange`),
comparing attributes with `diff` and pricing them with `costs`; `planfile`
saves and reads plans; `render` shows them; `apply` carries them out. Also the
stack's keys (`keys`), its CA (`tls`), its URLs (`outputs`) and the client of
the gateway's admin API (`admin_client`). The CLI (`skyform.cli`) drives it;
it drives `skyform.state` and `skyform.providers`. Nothing is imported here:
each command loads only the modules it uses.
"""
