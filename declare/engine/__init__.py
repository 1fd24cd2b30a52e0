"""`skyform.engine`: the stack engine, what `plan`, `apply` and `destroy` are made of.

The stack file (`stackfile`), the plan (`plan`: its model and `Action`), the
refresh against what is live, the planner, costs and the plan file, the
rendering of a plan (`render`), `apply`, the stack's keys and TLS
certificates, and the client of the gateway's admin API (`admin_client`).
The CLI (`skyform.cli`) drives it; it drives `skyform.state` and
`skyform.providers`. Nothing is imported here: `import skyform.engine` is free,
and each command loads only the modules it uses.
"""
