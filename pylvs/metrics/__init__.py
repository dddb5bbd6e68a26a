"""What lvsd shows about itself: one surface read by the Prometheus exporter, the status page and lvsadm.

`declared` names every metric once (name, type, help, labels); `snapshot` copies the director's state
into immutable views, built by the packet loop between rounds; `families` turns a snapshot into the
declared metrics' samples; `publisher` hands the latest snapshot to other threads.
"""
