"""The Finder's worked example, filled in when the tab opens so that one click shows what the tool does: lines of
Python code against English prose, a feature any model trained on code has (the embedded SmolLM2 dataset's corpus,
the Python docs, is full of both, so the neurons found open on pages that show it). Twenty texts a side, so the
probe's accuracy is trusted too (space.live.probe.TRUSTED_SAMPLES), within the caps of one run."""

from __future__ import annotations

FEATURE = "Python code, against English prose"
WITH_FEATURE = "\n".join([
    "for item in items: total += item.price",
    "def parse(text): return text.strip().split(',')",
    "import os, sys; print(sys.argv[1:])",
    "if key not in cache: cache[key] = load(key)",
    "while queue: node = queue.pop(0)",
    "class Point: x: int = 0; y: int = 0",
    "with open(path) as handle: lines = handle.readlines()",
    "return {name: value for name, value in pairs if value}",
    "except KeyError as error: raise ValueError(key) from error",
    "self.count = len([word for word in words if word])",
    "assert isinstance(value, int), repr(value)",
    "numbers = sorted(set(numbers), reverse=True)",
    "lambda row: (row['name'], row.get('age', 0))",
    "yield from (line.rstrip('\\n') for line in stream)",
    "async def fetch(url): return await client.get(url)",
    "print(f'{total:.2f} of {limit}', file=sys.stderr)",
    "elif index >= len(items): index = 0",
    "matrix[i][j] = matrix[i - 1][j] + matrix[i][j - 1]",
    "from collections import defaultdict, Counter",
    "try: result = int(text) except ValueError: result = None",
])
WITHOUT_FEATURE = "\n".join([
    "The museum opens at nine and closes early on Sundays.",
    "She walked along the river until the rain stopped.",
    "Most people remember their first teacher fondly.",
    "The recipe calls for two eggs and a cup of flour.",
    "Our train was late, so we missed the opening speech.",
    "A quiet garden can be the best place to read a book.",
    "He painted the fence blue because his daughter asked.",
    "The village has one bakery, one school and a small church.",
    "Autumn came early that year, and the leaves fell in a week.",
    "My grandmother still writes letters by hand every month.",
    "The children laughed when the dog chased its own tail.",
    "We spent the afternoon looking for shells on the beach.",
    "His new job starts on Monday, in an office near the park.",
    "The storm knocked out the power for most of the night.",
    "Nobody expected the small team to win the final match.",
    "The old bridge was closed for repairs all summer long.",
    "They planted tomatoes, beans and a row of sunflowers.",
    "After dinner we played cards and talked about the trip.",
    "The library lends tools as well as books to its members.",
    "It took her three tries to pass the driving test.",
])
