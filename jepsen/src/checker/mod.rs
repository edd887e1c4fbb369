//! Checkers: pure functions over a recorded history (and the tasks' side effects).
