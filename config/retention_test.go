package config

import (
	"strings"
	"testing"
	"time"
)

func TestStoreKeepMessages(t *testing.T) {
	if d := Defaults().Store.KeepMessages; d != 8760*time.Hour {
		t.Errorf("default keep_messages = %s, want 8760h", d)
	}
	for _, tc := range []struct {
		value string
		want  time.Duration
		msg   string // a problem's message; "" for none
	}{
		{value: "8760h", want: 8760 * time.Hour},
		{value: "24h", want: 24 * time.Hour},
		{value: "0", want: 0},
		{value: "-1h", msg: "must not be negative (got -1h0m0s; 0 keeps messages forever)"},
		{value: "23h", msg: "must be at least 24h (got 23h0m0s): replies, edits and reactions"},
		{value: "1s", msg: "must be at least 24h (got 1s)"},
	} {
		t.Run(tc.value, func(t *testing.T) {
			cfg, err := parseIn(t, t.TempDir(), okConns+"store: {keep_messages: "+tc.value+"}\n")
			if tc.msg == "" {
				if err != nil {
					t.Fatal(err)
				}
				if cfg.Store.KeepMessages != tc.want {
					t.Errorf("keep_messages = %s, want %s", cfg.Store.KeepMessages, tc.want)
				}
				return
			}
			ps := problemsOf(t, err)
			if len(ps.Items) != 1 {
				t.Fatalf("problems = %v", err)
			}
			p := ps.Items[0]
			if p.Path != "store.keep_messages" || !strings.Contains(p.Message, tc.msg) || p.Line != 8 {
				t.Errorf("problem = %+v, want store.keep_messages at line 8 saying %q", p, tc.msg)
			}
		})
	}
}
