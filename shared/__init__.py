"""Code shared by the wapair API and workers: config, keys, leases, state, the WhatsApp port."""
