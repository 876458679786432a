#!/usr/bin/env bash
# Installs the agent CLIs the preset tests drive (tests/e2e/agents.rs), at the versions the
# presets were measured with, into one folder: from npm, and aider from PyPI into a virtual
# environment. The tests put that folder's programs on their PATH; nothing is installed
# globally. Needs Node.js with npm, and Python 3 with venv.
set -euo pipefail
tools="${BRAID_AGENT_TOOLS:-$HOME/.cache/braid-agent-tools}"
mkdir -p "$tools/bin"
npm install --no-fund --no-audit --loglevel=error --prefix "$tools/npm" \
  @openai/codex@0.171.0 @anthropic-ai/claude-code@2.1.197 \
  @google/gemini-cli@0.61.0 opencode-ai@1.18.33
[ -x "$tools/aider/bin/pip" ] || python3 -m venv "$tools/aider"
"$tools/aider/bin/pip" install --quiet --disable-pip-version-check aider-chat==0.86.2
for cli in codex claude gemini opencode; do
  ln -sf "../npm/node_modules/.bin/$cli" "$tools/bin/$cli"
done
ln -sf "../aider/bin/aider" "$tools/bin/aider"
for cli in codex claude gemini opencode aider; do
  printf '%-8s %s\n' "$cli" "$("$tools/bin/$cli" --version 2>&1 | head -n 1)"
done
echo "agent CLIs in $tools/bin"
