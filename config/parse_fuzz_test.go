package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	phonebridge "github.com/phonebridge/phonebridge"
)

// configSeeds are the configs FuzzParse starts from: the shipped example,
// a config using every kind of field, and broken files of every kind the
// decoder reports. The connector types are config_test.go's fakes: the
// real ones would link the connectors' dependencies into the fuzzed
// binary, whose coverage then slows fuzzing a hundredfold.
func configSeeds() []string {
	return []string{
		exampleSeed(),
		`connectors:
  a:
    type: fake
    listen: 127.0.0.1:1
    token_file: token.txt
    timeout: 5s
    max_message_bytes: 0x10
    port: 65535
    ratio: 1e3
    verbose: yes
    mode: in
    tls: {cert: c.pem, key: k}
    proxy: {url: "http://p", retries: 2}
    allow: [x, y]
    users: [{name: ann, admin: true}]
    headers: {X-A: b}
  b: {type: bare}
routes:
  - name: r
    endpoints:
      - {connector: a, chat: "!room:example.org"}
      - {connector: b, chats: all, direction: out}
notices: {connector: a, chat: n}
`,
		"connectors:\n  a: &base\n    type: fake\n    token: t\n  b:\n    <<: *base\n    listen: :9001\n",
		// Broken: syntax, shapes, types, duplicates, unknown keys.
		"state_dir: [\n", "connectors:\n\t a: 1\n", "- 1\n- 2\n", "a: 1\n---\nb: 2\n",
		"connectors:\n  a:\n    type: fake\n    type: fake\n    listen: nope\n",
		"connectors:\n  A B:\n    type: nosuch\n  c: [1]\n  d: {typo: api}\n",
		"delivery: {retry_min: 5, retry_max: 1s, give_up_after: -1h}\nrelay: {edits: maybe}\n",
		"connectors: {a: {type: fake, token: x, token_file: token.txt}}\n",
		"connectors: {a: {type: fake, token_file: /dev/zero}}\n",
		"connectors: {a: {type: fake, token_file: ''}}\n",
		"routes: [{name: r, endpoints: [{connector: x, chat: a, chats: all}]}]\n",
		"media: {public_url: 'ftp://x', max_bytes: 99999999999999999999}\n",
		"? [a, b]\n: 1\n", "!!binary aGk=\n", "~\n", "", "\xff\xfe",
		// Aliases: a cycle, a merge of a mapping into itself, and small
		// expansions. Not bombs: an input that nears the limit takes
		// 50ms, and minimizing one would stall the fuzzer for a minute;
		// TestParseRefusesExpansion has those.
		"routes: &r [*r]\n",
		"connectors: {a: &a {type: fake, <<: *a}}\n",
		square(20, "{connector: a, chat: b}"), laughs(3, 4),
	}
}

// square is n routes that are each, by alias, the same route of n
// endpoints, each endpoint an alias of one: a few kilobytes that decode
// to n² endpoints.
func square(n int, endpoint string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "e: &e %s\nroutes:\n  - &r {name: r, endpoints: [*e", endpoint)
	b.WriteString(strings.Repeat(", *e", n-1))
	b.WriteString("]}\n")
	b.WriteString(strings.Repeat("  - *r\n", n-1))
	return b.String()
}

// exampleSeed is example.yaml with fake types and without its comments:
// the fuzzer minimizes every input that finds new code, a byte at a time,
// and the comments would make that take minutes.
func exampleSeed() string {
	var b strings.Builder
	for _, line := range strings.Split(string(phonebridge.ExampleConfig), "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			b.WriteString(line + "\n")
		}
	}
	return strings.NewReplacer("type: whatsapp", "type: bare", "type: api", "type: fake").Replace(b.String())
}

// laughs is a "billion laughs" of merge keys: connector cI merges width
// copies of c(I-1), for width^levels entries.
func laughs(levels, width int) string {
	var b strings.Builder
	b.WriteString("connectors:\n  c0: &c0 {type: fake, token: t}\n")
	for i := 1; i <= levels; i++ {
		fmt.Fprintf(&b, "  c%d: &c%d {<<: [*c%d", i, i, i-1)
		b.WriteString(strings.Repeat(fmt.Sprintf(", *c%d", i-1), width-1))
		b.WriteString("]}\n")
	}
	return b.String()
}

// FuzzParse feeds arbitrary bytes to config.Parse, which reads a file an
// operator wrote, perhaps from a template. It must never panic; it either
// returns a config that validates or refuses with problems, each with a
// message, never more than about a hundred, in an error of bounded size.
func FuzzParse(f *testing.F) {
	for _, s := range configSeeds() {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "token.txt"), []byte("s3cret\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	path := filepath.Join(dir, "phonebridge.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, path)
		if err == nil {
			if cfg == nil {
				t.Fatal("no config and no error")
			}
			if verr := cfg.Validate(); verr != nil {
				t.Fatalf("Parse accepted a config that does not validate: %v", verr)
			}
			for name, c := range cfg.Connectors {
				if c == nil || c.Name != name || c.Type == "" {
					t.Fatalf("accepted connector %q is %+v", name, c)
				}
			}
			return
		}
		if cfg != nil {
			t.Fatalf("a config and an error: %v", err)
		}
		msg := err.Error()
		if msg == "" || len(msg) > 1<<20 {
			t.Fatalf("error message of %d bytes", len(msg))
		}
		var ps *Problems
		if !errors.As(err, &ps) {
			return // a plain error (the directory), with its message
		}
		if len(ps.Items) == 0 || len(ps.Items) > 101 {
			t.Fatalf("%d problems", len(ps.Items))
		}
		for _, p := range ps.Items {
			if p.Message == "" {
				t.Fatalf("problem without a message: %+v", p)
			}
		}
	})
}

// TestParseRefusesExpansion checks the bounds FuzzParse relies on with
// inputs too big for the fuzzer to build: each is refused with a problem
// that names what is wrong, without the memory its expansion would take.
func TestParseRefusesExpansion(t *testing.T) {
	var many strings.Builder
	many.WriteString("connectors:\n")
	for i := range 5000 {
		fmt.Fprintf(&many, "  c%d: {type: fake, token: t, listen: ':%d'}\n", i, 10000+i)
	}
	many.WriteString("routes:\n  - name: r\n    endpoints:\n")
	for i := range 5000 {
		fmt.Fprintf(&many, "    - {connector: x%d, chat: a}\n", i)
	}
	long := strings.Repeat("a", 300_000)
	for _, tc := range []struct{ name, doc, want string }{
		{"list aliases", square(1000, "{connector: a, chat: b}"), "expands to more than 100000 values"},
		{"nulls", square(1000, "~"), "expands to more than 100000 values"},
		{"merges", laughs(9, 9), "expands to more than 100000 values"},
		{"merge into itself", "web: &w {<<: [*w]}\n", "web.<<: merges a mapping into itself"},
		{"secret file", "connectors: {a: {type: fake, token_file: /dev/zero}}\n", "cannot read /dev/zero: over 65536 bytes"},
		{"long key", "connectors:\n  ? " + long + "\n  : {type: fake, headers: {a: b}}\n", "is too long; keys are names of at most 256 bytes"},
		{"long value", "s: &s " + long + "\nconnectors: {a: {type: fake, listen: *s}}\n", `connectors.a.listen: "aaaa`},
		{"many problems", many.String(), "more problems not listed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := Parse([]byte(tc.doc), "")
			runtime.ReadMemStats(&after)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %.2000v\nwant it to say %q", err, tc.want)
			}
			if n := len(err.Error()); n > 64<<10 {
				t.Errorf("error of %d bytes", n)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 512<<20 {
				t.Errorf("parsing allocated %d MiB", alloc>>20)
			}
		})
	}
}
