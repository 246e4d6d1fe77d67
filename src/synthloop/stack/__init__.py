"""The production stack on one machine (``synthloop stack``): infra/stack.yaml's services as
real processes. settings: the config; procs: pid files and health waits; postgres: the
cluster; services: how each service starts; lifecycle: up / status / down."""
