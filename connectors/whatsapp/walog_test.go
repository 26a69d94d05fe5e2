package whatsapp

import (
	"bytes"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
)

// TestWhatsmeowErrorsAfterStopAreQuiet: whatsmeow's goroutines that
// outlive a stop (an app state fetch begun at login) fail on the closed
// database; that is no news for an operator, so it is not an error line.
// Before the stop the same error is one.
func TestWhatsmeowErrorsAfterStopAreQuiet(t *testing.T) {
	var out bytes.Buffer
	closed := new(atomic.Bool)
	log := newWALogger(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo})), closed)

	log.Errorf("Failed to fetch app state %s: %v", "critical_block", "sql: database is closed")
	if !strings.Contains(out.String(), "level=ERROR") {
		t.Errorf("while running, whatsmeow's error was logged as %q, want an ERROR line", out.String())
	}
	out.Reset()
	log.Errorf("Client outdated (405) connect failure (client version: %s)", "2.3000")
	if out.Len() != 0 {
		t.Errorf("client outdated was logged as %q; the link reports it itself", out.String())
	}
	closed.Store(true)
	log.Errorf("Failed to fetch app state %s: %v", "critical_block", "sql: database is closed")
	if out.Len() != 0 {
		t.Errorf("after the stop, whatsmeow's error was logged as %q, want nothing above debug", out.String())
	}
}
