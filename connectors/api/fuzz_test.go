package api

import (
	"strings"
	"testing"

	"github.com/phonebridge/phonebridge/bridge"
)

// FuzzParseEvent feeds arbitrary bytes to the parser of inbound events,
// which sees whatever any API client sends. It must never panic; what it
// accepts must be a valid event without a reserved id; what it refuses it
// refuses with a one-line 4xx reason.
func FuzzParseEvent(f *testing.F) {
	for _, seed := range []string{
		`{"id":"m1","kind":"message","chat":"general","sender":{"id":"a","name":"Ann"},"text":"hi","html":"<b>hi</b>"}`,
		`{"kind":"edit","chat":"c","target":"m1","text":"fixed"}`,
		`{"kind":"reaction","chat":"c","target":"m1","emoji":"👍"}`,
		`{"kind":"message","chat":"c","media":[{"mime":"image/png","name":"a.png","data":"aGVsbG8="}]}`,
		`{"kind":"message","chat":"c","time":"2024-05-01T12:00:00Z","text":"x"}`,
		`{"id":"pb.1","kind":"message","chat":"c","text":"x"}`,
		`{"kind":"message","chat":"c","text":"x","extra":1}`,
		`{"kind":"message","chat":"c","media":[{"data":"!!"}]}`,
		`{"kind":"typing","chat":"c"}`,
		`[1,2]`, `{"kind":`, `null`, ``, `{"kind":"message","chat":"c","text":"x"} {"trailing":1}`,
	} {
		f.Add([]byte(seed))
	}
	opts := NewOptions()
	opts.MaxMediaBytes = 1 << 10
	c := &Connector{name: "fuzz", opts: *opts}
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := c.parseEvent(data, "body")
		if err != nil {
			if err.status < 400 || err.status > 499 {
				t.Fatalf("refused with status %d: %s", err.status, err.msg)
			}
			if strings.ContainsAny(err.msg, "\n\r") {
				t.Fatalf("reason is not one line: %q", err.msg)
			}
			return
		}
		if cerr := in.ev.Check(); cerr != nil {
			t.Fatalf("accepted an invalid event (%v): %s", cerr, data)
		}
		if strings.HasPrefix(in.ev.ID, bridge.KeyPrefix) {
			t.Fatalf("accepted a reserved id %q", in.ev.ID)
		}
		if len(in.media) != len(in.ev.Media) {
			t.Fatalf("%d media bodies for %d attachments", len(in.media), len(in.ev.Media))
		}
	})
}
