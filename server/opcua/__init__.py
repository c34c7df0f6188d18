"""The OPC UA sink: publishes minute results, raw tag values and alarms to DCS / SCADA clients.

`sink` holds OpcUaSink (the asyncua server); `layout` the address space, its engineering
units and status codes; `conditions` the Alarms & Conditions objects and events; `users`
the identities (user-name logins, the session user of a method call); `config` the
configuration schema (no asyncua import).
"""
