"""Print the README command that follows a `<!-- ci: NAME -->` marker (the first line of the next
fenced block), so CI runs exactly what the README tells a user to run. Exit 1 if it is missing."""
import re
import sys

name, readme = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "README.md"
text = open(readme, encoding="utf-8").read()
m = re.search(rf"<!-- ci: {re.escape(name)} -->\s*```[a-z]*\n([^\n]+)\n", text)
if not m:
    sys.exit(f"{readme}: no '<!-- ci: {name} -->' marker followed by a fenced command")
print(m.group(1).strip())
