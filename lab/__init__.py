"""The local lab: real directory, SSH and WinRM servers started on loopback from the inventory."""
