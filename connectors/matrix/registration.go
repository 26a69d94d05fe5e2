package matrix

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/appservice"
)

// RegistrationResult says what WriteRegistration did.
type RegistrationResult struct {
	Path string
	// Created is true when the file did not exist (new tokens).
	Created bool
	// Changes lists, for humans, what was updated in an existing file;
	// empty with Created false means it was already up to date.
	Changes []string
}

// tokenLength is the length of as_token and hs_token: 64 characters of
// [A-Za-z0-9] carry 381 bits.
const tokenLength = 64

// registrationID is the appservice id written into a new file; an existing
// file keeps its own, since the homeserver keys its state on it.
func registrationID(connector string) string { return "phonebridge-" + connector }

// appserviceURL is how the homeserver reaches the appservice API.
func appserviceURL(o *Options) (string, error) {
	if o.URL != "" {
		return o.URL, nil
	}
	host, _, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return "", fmt.Errorf("listen %q is not host:port: %v", o.Listen, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return "", fmt.Errorf("listen %s binds every interface, so the homeserver's way to it is unknown: set url to the address it reaches phonebridge at (http://HOST:PORT)", o.Listen)
	}
	return "http://" + o.Listen, nil
}

// ghostNamespace is the exclusive user regex for ghosts. Synapse matches
// it with re.match, Dendrite with Go's MatchString (unanchored), hence
// both anchors.
func ghostNamespace(o *Options) string {
	return "^@" + regexp.QuoteMeta(o.GhostPrefix) + ".*:" + regexp.QuoteMeta(o.Domain) + "$"
}

func botNamespace(o *Options) string {
	return "^" + regexp.QuoteMeta("@"+o.BotLocalpart+":"+o.Domain) + "$"
}

func wantNamespaces(o *Options) appservice.Namespaces {
	return appservice.Namespaces{UserIDs: appservice.NamespaceList{
		{Regex: ghostNamespace(o), Exclusive: true},
		{Regex: botNamespace(o), Exclusive: true},
	}}
}

// WriteRegistration creates the appservice registration file at path for
// the connector named connector, or brings an existing one in line with
// the options. An existing file keeps its id and tokens (the homeserver
// already knows them) and any keys phonebridge does not manage; the file
// is replaced atomically and is always left 0600, as it holds both tokens.
func WriteRegistration(connector string, o *Options, path string) (*RegistrationResult, error) {
	url, err := appserviceURL(o)
	if err != nil {
		return nil, err
	}
	res := &RegistrationResult{Path: path}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		asToken, err := newRegistrationToken()
		if err != nil {
			return nil, err
		}
		hsToken, err := newRegistrationToken()
		if err != nil {
			return nil, err
		}
		reg := &appservice.Registration{
			ID:              registrationID(connector),
			URL:             url,
			AppToken:        asToken,
			ServerToken:     hsToken,
			SenderLocalpart: o.BotLocalpart,
			RateLimited:     new(false),
			Namespaces:      wantNamespaces(o),
			// Typing and read receipts (MSC2409): the stable key, and the
			// unstable one older homeservers read.
			EphemeralEvents:     true,
			SoruEphemeralEvents: true,
		}
		out, err := yaml.Marshal(reg)
		if err != nil {
			return nil, err
		}
		if err := writeRegistrationFile(path, out); err != nil {
			return nil, err
		}
		res.Created = true
		return res, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the registration file: %w", err)
	}

	doc, reg, err := parseRegistration(path, data)
	if err != nil {
		return nil, err
	}
	m := doc.Content[0]
	set := func(key string, value any) error {
		var n yaml.Node
		if err := n.Encode(value); err != nil {
			return err
		}
		setMappingKey(m, key, &n)
		return nil
	}
	var errs []error
	change := func(key, what string, value any) {
		res.Changes = append(res.Changes, key+": "+what)
		errs = append(errs, set(key, value))
	}
	if reg.ID == "" {
		change("id", "set to "+registrationID(connector), registrationID(connector))
	}
	for _, t := range []struct {
		key string
		cur string
	}{{"as_token", reg.AppToken}, {"hs_token", reg.ServerToken}} {
		if len(t.cur) < 32 {
			tok, err := newRegistrationToken()
			if err != nil {
				return nil, err
			}
			change(t.key, "was missing or too short; generated", tok)
		}
	}
	if reg.URL != url {
		change("url", fmt.Sprintf("%q → %q", reg.URL, url), url)
	}
	if reg.SenderLocalpart != o.BotLocalpart {
		change("sender_localpart", fmt.Sprintf("%q → %q", reg.SenderLocalpart, o.BotLocalpart), o.BotLocalpart)
	}
	if reg.RateLimited == nil || *reg.RateLimited {
		change("rate_limited", "set to false", false)
	}
	if !reg.EphemeralEvents || !reg.SoruEphemeralEvents {
		change("receive_ephemeral", "set to true (typing and read receipts)", true)
		errs = append(errs, set("de.sorunome.msc2409.push_ephemeral", true))
	}
	if want := wantNamespaces(o); !reflect.DeepEqual(reg.Namespaces, want) {
		change("namespaces", "users now "+namespaceList(want.UserIDs), want)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("update the registration file: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		res.Changes = append(res.Changes, fmt.Sprintf("mode: %04o → 0600 (it holds secrets)", mode))
	}
	if len(res.Changes) == 0 {
		return res, nil
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return nil, err
	}
	if err := writeRegistrationFile(path, out); err != nil {
		return nil, err
	}
	return res, nil
}

// loadRegistration reads the registration file for the connector's start
// and lists where it no longer matches the options: the homeserver goes
// by the file, so a stale one needs `phonebridge matrix registration`
// and a homeserver restart.
func loadRegistration(connector string, o *Options, path string) (reg *appservice.Registration, stale []string, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("the appservice registration %s does not exist: run `phonebridge matrix registration %s` and load it into the homeserver", path, connector)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read the appservice registration: %w", err)
	}
	_, reg, err = parseRegistration(path, data)
	if err != nil {
		return nil, nil, err
	}
	if len(reg.AppToken) < 32 || len(reg.ServerToken) < 32 {
		return nil, nil, fmt.Errorf("the appservice registration %s lacks as_token or hs_token: run `phonebridge matrix registration %s` and restart the homeserver", path, connector)
	}
	if url, err := appserviceURL(o); err == nil && reg.URL != url {
		stale = append(stale, "url")
	}
	if reg.SenderLocalpart != o.BotLocalpart {
		stale = append(stale, "sender_localpart")
	}
	if !reflect.DeepEqual(reg.Namespaces, wantNamespaces(o)) {
		stale = append(stale, "namespaces")
	}
	if !reg.EphemeralEvents || !reg.SoruEphemeralEvents {
		stale = append(stale, "receive_ephemeral")
	}
	return reg, stale, nil
}

// parseRegistration decodes a registration file both as a node tree (to
// edit it keeping what phonebridge does not manage) and as a Registration.
func parseRegistration(path string, data []byte) (*yaml.Node, *appservice.Registration, error) {
	bad := func(why string) error {
		return fmt.Errorf("the appservice registration %s %s: fix it, or move it away to have a new one written (the homeserver then needs the new file)", path, why)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, nil, bad("is not valid YAML (" + strings.TrimPrefix(err.Error(), "yaml: ") + ")")
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, nil, bad("is not a YAML mapping")
	}
	reg := &appservice.Registration{}
	if err := doc.Decode(reg); err != nil {
		return nil, nil, bad("does not look like a registration (" + strings.TrimPrefix(err.Error(), "yaml: ") + ")")
	}
	return &doc, reg, nil
}

// setMappingKey sets key in the mapping node m, in place if present.
func setMappingKey(m *yaml.Node, key string, value *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = value
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, value)
}

func namespaceList(l appservice.NamespaceList) string {
	rs := make([]string, len(l))
	for i, ns := range l {
		rs[i] = ns.Regex
	}
	return strings.Join(rs, ", ")
}

// newRegistrationToken returns tokenLength random characters from [A-Za-z0-9].
func newRegistrationToken() (string, error) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	// Bytes at or above 248 (4×62) are rejected so every character is
	// equally likely.
	out := make([]byte, 0, tokenLength)
	buf := make([]byte, tokenLength*2)
	for len(out) < tokenLength {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("generate a token: %w", err)
		}
		for _, b := range buf {
			if b < 248 && len(out) < tokenLength {
				out = append(out, alphabet[b%62])
			}
		}
	}
	return string(out), nil
}

// writeRegistrationFile replaces path with data: a reader (or a crash) sees the
// old file or the new one, never a part. The new file is 0600 from its
// creation.
func writeRegistrationFile(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create the registration file's directory: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write the registration file: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("write the registration file: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write the registration file: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write the registration file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write the registration file: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write the registration file: %w", err)
	}
	// The rename is durable once the directory is synced.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
