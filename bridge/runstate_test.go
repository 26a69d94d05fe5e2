package bridge_test

import (
	"errors"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/bridgetest"
	"github.com/phonebridge/phonebridge/config"
)

// TestMaybeSent: a delivery is flagged as maybe sent when an earlier
// attempt failed, or when the last run stopped uncleanly with it in the
// outbox; never otherwise.
func TestMaybeSent(t *testing.T) {
	a, b := bridgetest.NewFake("a", all), bridgetest.NewFake("b", all)
	h := bridgetest.New(t, []config.Route{bridgetest.Route("r", "a/x", "b/y")}, a, b)
	maybe := func(got []bridge.Outgoing) map[string]bool {
		m := map[string]bool{}
		for _, o := range got {
			m[o.Text] = o.MaybeSent
		}
		return m
	}
	tried := make(chan string, 100)
	failOn := func(text string) {
		b.FailWith(func(out *bridge.Outgoing) error {
			tried <- out.Text
			if out.Text == text {
				return errors.New("down")
			}
			return nil
		})
	}
	waitTried := func(text string) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case got := <-tried:
				if got == text {
					return
				}
			case <-timeout:
				t.Fatalf("no attempt at %q", text)
			}
		}
	}

	// A clean stop: the row that failed is flagged, the one behind it,
	// never attempted, is not.
	failOn("1")
	h.Inject(msg("a", "x", "0", "0"))
	h.Inject(msg("a", "x", "1", "1"))
	h.Inject(msg("a", "x", "2", "2"))
	waitTried("1")
	h.Restart()
	b.FailWith(nil)
	b.Resume("")
	if got := maybe(b.WaitSent(t, 3)); got["0"] || !got["1"] || got["2"] {
		t.Errorf("after a clean stop MaybeSent = %v, want only 1", got)
	}

	// An unclean stop (the run mark left behind): every row the last run
	// had may have gone out; rows accepted since may not.
	failOn("3")
	h.Inject(msg("a", "x", "3", "3"))
	h.Inject(msg("a", "x", "4", "4"))
	waitTried("3")
	if err := h.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	store, err := bridge.OpenStore(h.Path, "normal")
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Write(t.Context(), func(tx *bridge.Tx) error {
		_, err := tx.Exec(`UPDATE core_state SET value = 'running' WHERE key = 'run'`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	store.Close()
	h.Start()
	b.FailWith(nil)
	b.Resume("")
	b.WaitSent(t, 5)
	h.Inject(msg("a", "x", "5", "5"))
	if got := maybe(b.WaitSent(t, 6)); !got["3"] || !got["4"] || got["5"] {
		t.Errorf("after an unclean stop MaybeSent = %v, want 3 and 4 but not 5", got)
	}
}
