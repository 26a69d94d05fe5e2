package bridge

import "slices"

// CoreSchema is the core's schema steps, in the order Start applies them
// (Store.Migrate "core"). Tests use its first steps to build a database
// as an older release left it, then start on it.
func CoreSchema() []string { return slices.Clone(coreMigrations) }
