package matrix

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"maunium.net/go/mautrix/appservice"

	"github.com/phonebridge/phonebridge/config"
)

// asOptions is a valid appservice-mode configuration for tests.
func asOptions() *Options {
	o := NewOptions()
	o.Homeserver = "https://matrix.example.org"
	o.Domain = "example.org"
	o.Registration = "registration.yaml"
	o.Owner = "@owner:example.org"
	return o
}

func readRegistration(t *testing.T, path string) *appservice.Registration {
	t.Helper()
	reg, err := appservice.LoadRegistration(path)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestWriteRegistrationFresh(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "registration.yaml")
	o := asOptions()
	res, err := WriteRegistration("mx", o, path)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Created || len(res.Changes) != 0 || res.Path != path {
		t.Fatalf("result = %+v, want created with no changes", res)
	}
	if m := mode(t, path); m != 0o600 {
		t.Errorf("mode = %04o, want 0600", m)
	}
	reg := readRegistration(t, path)
	if reg.ID != "phonebridge-mx" || reg.URL != "http://"+DefaultListen || reg.SenderLocalpart != DefaultBotLocalpart {
		t.Errorf("id, url, sender_localpart = %q, %q, %q", reg.ID, reg.URL, reg.SenderLocalpart)
	}
	if reg.RateLimited == nil || *reg.RateLimited {
		t.Errorf("rate_limited = %v, want false", reg.RateLimited)
	}
	token := regexp.MustCompile(`^[A-Za-z0-9]{64}$`)
	if !token.MatchString(reg.AppToken) || !token.MatchString(reg.ServerToken) || reg.AppToken == reg.ServerToken {
		t.Errorf("tokens %q and %q are not two distinct 64-character tokens", reg.AppToken, reg.ServerToken)
	}
	if len(reg.Namespaces.RoomAliases) != 0 || len(reg.Namespaces.RoomIDs) != 0 {
		t.Errorf("alias or room namespaces claimed: %+v", reg.Namespaces)
	}
	for _, ns := range reg.Namespaces.UserIDs {
		if !ns.Exclusive {
			t.Errorf("namespace %q is not exclusive", ns.Regex)
		}
	}
	// A second file gets other tokens: they are random.
	other := filepath.Join(t.TempDir(), "registration.yaml")
	if _, err := WriteRegistration("mx", o, other); err != nil {
		t.Fatal(err)
	}
	if reg2 := readRegistration(t, other); reg2.AppToken == reg.AppToken || reg2.ServerToken == reg.ServerToken {
		t.Error("two registrations got the same tokens")
	}
}

func TestWriteRegistrationNamespaces(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registration.yaml")
	o := asOptions()
	o.GhostPrefix = "w.a_" // the '.' must be literal
	o.Domain = "ex.org"
	if _, err := WriteRegistration("mx", o, path); err != nil {
		t.Fatal(err)
	}
	reg := readRegistration(t, path)
	var res []*regexp.Regexp
	for _, ns := range reg.Namespaces.UserIDs {
		res = append(res, regexp.MustCompile(ns.Regex))
	}
	claimed := func(u string) bool {
		for _, re := range res {
			if re.MatchString(u) {
				return true
			}
		}
		return false
	}
	for _, u := range []string{"@w.a_15551234567=40s.whatsapp.net:ex.org", "@w.a_x:ex.org", "@phonebridgebot:ex.org"} {
		if !claimed(u) {
			t.Errorf("%s is not in the namespaces %v", u, res)
		}
	}
	for _, u := range []string{
		"@wxa_1:ex.org",          // '.' in the prefix is not a wildcard
		"@w.a_1:exxorg",          // nor in the domain
		"@w.a_1:ex.org.evil.com", // anchored at the end
		"@xw.a_1:ex.org",         // and at the start
		"@alice:ex.org",
		"@phonebridgebot2:ex.org",
		"@phonebridgebot:other.org",
	} {
		if claimed(u) {
			t.Errorf("%s is in the namespaces %v", u, res)
		}
	}
}

func TestWriteRegistrationIdempotent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registration.yaml")
	o := asOptions()
	if _, err := WriteRegistration("mx", o, path); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	first := readRegistration(t, path)

	res, err := WriteRegistration("mx", o, path)
	if err != nil {
		t.Fatal(err)
	}
	if res.Created || len(res.Changes) != 0 {
		t.Fatalf("rerun: %+v, want nothing done", res)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatalf("rerun changed the file:\n%s\nto\n%s", before, after)
	}

	// Changed options update the file in place; tokens and id stay, as
	// does what an admin added.
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("x_admin_note: keep me\n")
	f.Close()
	os.Chmod(path, 0o644)
	o.URL = "http://bridge.internal:29318"
	o.GhostPrefix = "whatsapp_"
	o.Domain = "example.com"
	res, err = WriteRegistration("other-name", o, path)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(res.Changes, "\n")
	for _, want := range []string{"url", "namespaces", "mode"} {
		if !strings.Contains(joined, want) {
			t.Errorf("changes %q do not report %s", res.Changes, want)
		}
	}
	if m := mode(t, path); m != 0o600 {
		t.Errorf("mode = %04o after the update, want 0600", m)
	}
	reg := readRegistration(t, path)
	if reg.AppToken != first.AppToken || reg.ServerToken != first.ServerToken || reg.ID != first.ID {
		t.Error("an update changed the id or the tokens")
	}
	if reg.URL != o.URL || !reg.EphemeralEvents || !reg.SoruEphemeralEvents {
		t.Errorf("url %q, receive_ephemeral %v, push_ephemeral %v", reg.URL, reg.EphemeralEvents, reg.SoruEphemeralEvents)
	}
	if !regexp.MustCompile(reg.Namespaces.UserIDs[0].Regex).MatchString("@whatsapp_1:example.com") {
		t.Errorf("ghost namespace %q not updated", reg.Namespaces.UserIDs[0].Regex)
	}
	if b, _ := os.ReadFile(path); !strings.Contains(string(b), "x_admin_note: keep me") {
		t.Errorf("a key phonebridge does not manage was dropped:\n%s", b)
	}

	// Loading for the connector: current, then stale after a change.
	if _, stale, err := loadRegistration("mx", o, path); err != nil || len(stale) != 0 {
		t.Errorf("loadRegistration = stale %v, err %v; want current", stale, err)
	}
	o.BotLocalpart = "otherbot"
	if _, stale, err := loadRegistration("mx", o, path); err != nil || strings.Join(stale, ",") != "sender_localpart,namespaces" {
		t.Errorf("loadRegistration = stale %v, err %v; want sender_localpart,namespaces", stale, err)
	}
}

func TestWriteRegistrationErrors(t *testing.T) {
	dir := t.TempDir()
	o := asOptions()
	o.Listen = "0.0.0.0:29318"
	if _, err := WriteRegistration("mx", o, filepath.Join(dir, "a.yaml")); err == nil || !strings.Contains(err.Error(), "set url") {
		t.Errorf("listen on every interface without url: err = %v, want a hint to set url", err)
	}
	o.Listen = DefaultListen

	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("id: [unclosed\n"), 0o600)
	if _, err := WriteRegistration("mx", o, bad); err == nil || !strings.Contains(err.Error(), "not valid YAML") {
		t.Errorf("broken file: err = %v", err)
	}
	if b, _ := os.ReadFile(bad); string(b) != "id: [unclosed\n" {
		t.Error("a broken file was overwritten")
	}
	if _, _, err := loadRegistration("mx", o, filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "phonebridge matrix registration mx") {
		t.Errorf("missing file: err = %v, want the command to run", err)
	}
	// A file without tokens gets new ones.
	partial := filepath.Join(dir, "partial.yaml")
	os.WriteFile(partial, []byte("id: mine\n"), 0o600)
	res, err := WriteRegistration("mx", o, partial)
	if err != nil {
		t.Fatal(err)
	}
	if reg := readRegistration(t, partial); reg.ID != "mine" || len(reg.AppToken) != 64 || len(reg.ServerToken) != 64 {
		t.Errorf("partial file completed to %+v (changes %q)", reg, res.Changes)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

// TestValidateAppserviceNames: localparts the registration and the ghost
// ids are built from are checked at config load.
func TestValidateAppserviceNames(t *testing.T) {
	for _, c := range []struct {
		bot, prefix string
		problem     string // a path that must have a problem; "" for none
	}{
		{DefaultBotLocalpart, DefaultGhostPrefix, ""},
		{"bridge.bot", "whatsapp/", ""},
		{"Bot", DefaultGhostPrefix, "bot_localpart"},
		{"bot:x", DefaultGhostPrefix, "bot_localpart"},
		{DefaultBotLocalpart, "WA_", "ghost_prefix"},
		{DefaultBotLocalpart, "wa=", "ghost_prefix"}, // '=' starts escapes
		{DefaultBotLocalpart, "wa ", "ghost_prefix"},
		{"wa_bot", "wa_", "ghost_prefix"}, // the bot would pass for a ghost
	} {
		o := asOptions()
		o.BotLocalpart, o.GhostPrefix = c.bot, c.prefix
		var problems []config.Problem
		o.Validate(config.NewChecker("connectors.mx", &problems))
		var paths []string
		for _, p := range problems {
			paths = append(paths, p.Path)
		}
		want := []string(nil)
		if c.problem != "" {
			want = []string{"connectors.mx." + c.problem}
		}
		if strings.Join(paths, ",") != strings.Join(want, ",") {
			t.Errorf("bot %q, prefix %q: problems at %v, want %v (%v)", c.bot, c.prefix, paths, want, problems)
		}
	}
}

// A registration written before typing and receipts were relayed gains
// the flags that make the homeserver push them, keeping its tokens.
func TestWriteRegistrationTurnsOnEphemeral(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registration.yaml")
	o := asOptions()
	if _, err := WriteRegistration("mx", o, path); err != nil {
		t.Fatal(err)
	}
	first := readRegistration(t, path)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.Contains(line, "ephemeral") {
			kept = append(kept, line)
		}
	}
	if err := os.WriteFile(path, []byte(strings.Join(kept, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	if old := readRegistration(t, path); old.EphemeralEvents || old.SoruEphemeralEvents {
		t.Fatal("the test did not remove the flags")
	}
	if _, stale, err := loadRegistration("mx", o, path); err != nil || fmt.Sprint(stale) != "[receive_ephemeral]" {
		t.Errorf("loading the old registration: stale %v (%v), want receive_ephemeral", stale, err)
	}
	res, err := WriteRegistration("mx", o, path)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changes) != 1 || !strings.HasPrefix(res.Changes[0], "receive_ephemeral") {
		t.Errorf("changes %q, want receive_ephemeral alone", res.Changes)
	}
	reg := readRegistration(t, path)
	if !reg.EphemeralEvents || !reg.SoruEphemeralEvents || reg.AppToken != first.AppToken || reg.ServerToken != first.ServerToken {
		t.Errorf("after the update: receive_ephemeral %v, push_ephemeral %v, tokens kept %v", reg.EphemeralEvents, reg.SoruEphemeralEvents, reg.AppToken == first.AppToken && reg.ServerToken == first.ServerToken)
	}
}
