package conformance

import (
	"os"
	"testing"

	"github.com/octohelm/crpe/internal/testenv"
)

// TestMain runs the tests with testenv.Main, which removes the crpe binary
// built for them (unless $CRPE_BIN names one) when they end.
func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
