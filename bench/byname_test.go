package bench

import (
	"flag"
	"strings"
	"testing"
)

// onlyByName skips a long benchmark (minutes, real servers) unless the
// -bench pattern names it: `-bench .` then runs only the relay
// benchmarks instead of running into the test timeout. how is the
// command docs/BENCHMARKS.md gives for it.
func onlyByName(b *testing.B, name, how string) {
	b.Helper()
	if f := flag.Lookup("test.bench"); f == nil || !strings.Contains(f.Value.String(), name) {
		b.Skipf("%s takes minutes and real servers: run it by name, as docs/BENCHMARKS.md says: %s", name, how)
	}
}
