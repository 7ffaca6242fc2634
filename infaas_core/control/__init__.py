"""The control layer both backends share (DESIGN.md, "the control layer")."""
