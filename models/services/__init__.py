"""Domain services: the rules of files, jobs, runs, dispatch, quotas, tenants, the catalog, events and outputs."""
