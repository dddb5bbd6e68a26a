"""The ipvsadm 1.31 compatibility kit: its command lines (`args`), its listings (`format`) and its rule
files (`rules`), shared by `lvsadm` and `lvsd --config`. Pure: nothing here talks to lvsd."""
