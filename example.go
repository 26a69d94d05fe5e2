// Package phonebridge holds what belongs to the project as a whole: the
// documented example configuration, printed by `phonebridge config example`.
package phonebridge

import _ "embed"

// ExampleConfig is example.yaml, every key documented.
//
//go:embed example.yaml
var ExampleConfig []byte
