package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"maunium.net/go/mautrix/appservice"

	"github.com/phonebridge/phonebridge"
	"github.com/phonebridge/phonebridge/config"
	"github.com/phonebridge/phonebridge/connectors/irc"
	"github.com/phonebridge/phonebridge/connectors/matrix"
)

// matrixConfig writes a config with the given connectors section and
// returns its path.
func matrixConfig(t *testing.T, dir, connectors string) string {
	t.Helper()
	path := filepath.Join(dir, "phonebridge.yaml")
	if err := os.WriteFile(path, []byte("state_dir: ./state\nconnectors:\n"+connectors), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func appserviceSection(name, registration, extra string) string {
	return "  " + name + `:
    type: matrix
    mode: appservice
    homeserver: https://matrix.example.org
    domain: example.org
    owner: "@me:example.org"
    registration: ` + registration + "\n" + extra
}

const botSection = `  bot:
    type: matrix
    mode: bot
    homeserver: https://matrix.example.org
    domain: example.org
    user_id: "@bot:example.org"
    access_token: secret-token-for-tests
`

func TestMatrixRegistrationCommand(t *testing.T) {
	dir := t.TempDir()
	cfg := matrixConfig(t, dir, appserviceSection("home", "home-registration.yaml", "")+
		appserviceSection("work", "/nonexistent/never-written.yaml", "")+botSection)
	ctx := context.Background()

	// Two appservice connectors: the command asks which.
	_, err := execute(t, ctx, "matrix", "registration", "-c", cfg)
	if err == nil || !strings.Contains(err.Error(), "home, work") || !strings.Contains(err.Error(), "phonebridge matrix registration home") {
		t.Fatalf("without NAME among two: err = %v, want both names and an example", err)
	}
	for name, want := range map[string]string{"bot": "bot mode", "nope": "no connector \"nope\""} {
		if _, err := execute(t, ctx, "matrix", "registration", name, "-c", cfg); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("registration %s: err = %v, want %q", name, err, want)
		}
	}

	out, err := execute(t, ctx, "matrix", "registration", "home", "-c", cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "home-registration.yaml") // relative to the config
	for _, want := range []string{"Wrote " + path, "app_service_config_files", "app_service_api.config_files", "restart the homeserver"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\n"); n > 6 {
		t.Errorf("output is %d lines, want a few:\n%s", n, out)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o, want 0600", fi.Mode().Perm())
	}
	reg, err := appservice.LoadRegistration(path)
	if err != nil {
		t.Fatal(err)
	}
	if reg.ID != "phonebridge-home" || len(reg.AppToken) != 64 || len(reg.ServerToken) != 64 || reg.SenderLocalpart != "phonebridgebot" {
		t.Errorf("registration %+v", reg)
	}
	if strings.Contains(out, reg.AppToken) || strings.Contains(out, reg.ServerToken) {
		t.Error("the output shows a token")
	}
	if _, err := os.Stat("/nonexistent/never-written.yaml"); err == nil {
		t.Error("the other connector's registration was written")
	}

	out, err = execute(t, ctx, "matrix", "registration", "home", "-c", cfg)
	if err != nil || !strings.Contains(out, "up to date") {
		t.Errorf("rerun: %q, %v; want up to date", out, err)
	}

	// One appservice connector needs no NAME; a changed url is updated
	// in place and the tokens kept.
	cfg = matrixConfig(t, dir, appserviceSection("home", "home-registration.yaml", "    url: http://bridge.internal:29318\n")+botSection)
	out, err = execute(t, ctx, "matrix", "registration", "-c", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Updated "+path) || !strings.Contains(out, "http://bridge.internal:29318") || !strings.Contains(out, "restart the homeserver") {
		t.Errorf("update output:\n%s", out)
	}
	again, err := appservice.LoadRegistration(path)
	if err != nil {
		t.Fatal(err)
	}
	if again.AppToken != reg.AppToken || again.ServerToken != reg.ServerToken || again.URL != "http://bridge.internal:29318" {
		t.Errorf("after the update: url %q, tokens kept %v", again.URL, again.AppToken == reg.AppToken && again.ServerToken == reg.ServerToken)
	}

	cfg = matrixConfig(t, dir, botSection)
	if _, err := execute(t, ctx, "matrix", "registration", "-c", cfg); err == nil || !strings.Contains(err.Error(), "no matrix connector in appservice mode") {
		t.Errorf("with none: err = %v", err)
	}
}

// uncommentExample returns example.yaml with its commented-out sections
// ("# >>> title" to "# <<<") uncommented, and the titles found.
func uncommentExample(t *testing.T) (string, []string) {
	t.Helper()
	var out []string
	var titles []string
	in := false
	for _, line := range strings.Split(string(phonebridge.ExampleConfig), "\n") {
		trimmed := strings.TrimLeft(line, " ")
		indent := line[:len(line)-len(trimmed)]
		switch {
		case strings.HasPrefix(trimmed, "# >>> "):
			if in {
				t.Fatalf("example.yaml: %q opens a section inside another", line)
			}
			in = true
			titles = append(titles, strings.TrimPrefix(trimmed, "# >>> "))
		case trimmed == "# <<<":
			if !in {
				t.Fatalf("example.yaml: %q closes no section", line)
			}
			in = false
		case in:
			if !strings.HasPrefix(trimmed, "# ") {
				t.Fatalf("example.yaml: %q in a commented-out section is not commented out", line)
			}
			out = append(out, indent+strings.TrimPrefix(trimmed, "# "))
		default:
			out = append(out, line)
		}
	}
	if in {
		t.Fatal("example.yaml: a commented-out section is not closed")
	}
	return strings.Join(out, "\n"), titles
}

// TestExampleMatrixSectionsValidate keeps the documented Matrix and IRC
// keys true: the commented-out sections of example.yaml, uncommented, must
// validate.
func TestExampleMatrixSectionsValidate(t *testing.T) {
	text, titles := uncommentExample(t)
	if strings.Join(titles, ",") != "matrix appservice,matrix bot,irc" {
		t.Fatalf("example.yaml's commented-out sections are %q, want the matrix appservice and bot ones and irc", titles)
	}
	path := filepath.Join(t.TempDir(), "phonebridge.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("example.yaml with the Matrix sections uncommented does not validate:\n%v", err)
	}
	for name, mode := range map[string]string{"matrix": matrix.ModeAppservice, "matrix-bot": matrix.ModeBot} {
		c := cfg.Connectors[name]
		if c == nil {
			t.Errorf("connector %s is missing once uncommented", name)
			continue
		}
		if o, ok := c.Options.(*matrix.Options); !ok || o.Mode != mode {
			t.Errorf("connector %s: options %#v, want a matrix connector in %s mode", name, c.Options, mode)
		}
	}
	if c := cfg.Connectors["libera"]; c == nil {
		t.Error("connector libera is missing once uncommented")
	} else if o, ok := c.Options.(*irc.Options); !ok || o.Server != "irc.libera.chat:6697" || !o.TLS || o.SASL.Mechanism != irc.SASLPlain {
		t.Errorf("connector libera: options %#v, want an irc connector with TLS and SASL", c.Options)
	}
	if _, err := execute(t, context.Background(), "config", "validate", "-c", path); err != nil {
		t.Errorf("config validate: %v", err)
	}
}
