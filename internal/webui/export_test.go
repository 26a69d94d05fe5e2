//go:build linux

package webui

import (
	"encoding/base64"
	"testing"
)

// For the tests of package webui_test, which run the real daemon (through
// internal/daemontest, which imports this package): the headless browser
// of cdp_test.go.

// Tab is a page in a headless Chromium.
type Tab struct{ p *tab }

// NewTab starts a headless Chromium, closed at the test's end, and opens
// a page in it.
func NewTab(t *testing.T) Tab { return Tab{startBrowser(t).newTab(t, false)} }

func (p Tab) Navigate(url string)             { p.p.t.Helper(); p.p.navigate(url) }
func (p Tab) Must(expr string, out any)       { p.p.t.Helper(); p.p.must(expr, out) }
func (p Tab) WaitFor(what, cond string)       { p.p.t.Helper(); p.p.waitFor(what, cond) }
func (p Tab) Eval(expr string, out any) error { return p.p.eval(expr, out) }

// Screenshot returns a PNG of the page's area x, y, w, h (CSS pixels, from
// the document's top left), as the browser painted it.
func (p Tab) Screenshot(x, y, w, h float64) []byte {
	p.p.t.Helper()
	var shot struct{ Data string }
	err := p.p.b.call(p.p.session, "Page.captureScreenshot", map[string]any{
		"format":                "png",
		"captureBeyondViewport": true,
		"clip":                  map[string]any{"x": x, "y": y, "width": w, "height": h, "scale": 1},
	}, &shot)
	if err != nil {
		p.p.t.Fatal(err)
	}
	data, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		p.p.t.Fatalf("the screenshot is not base64: %v", err)
	}
	return data
}
