"""Build the bundled datasets in ``workbench/data/bundled/`` (deterministic, seeded).

Run ``python -m workbench.data.build_bundled`` to rewrite the committed files byte for byte, or
``python -m workbench.data.build_bundled --out DIR`` to write them elsewhere. All content is written by the project:
hand-written question/answer pairs, templated families whose answers are computed exactly here, public-domain
quotations and open-ended prompts. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
from decimal import Decimal
from pathlib import Path

SEED = 20261122
DEFAULT_OUT = Path(__file__).resolve().parent / "bundled"
INSTRUCTIONS_TEST_FRACTION = 80 / 600
PROMPTS_TEST_FRACTION = 60 / 300

# ---------------------------------------------------------------------------------------------------------------
# Hand-written question/answer pairs, by category.
# ---------------------------------------------------------------------------------------------------------------

COOKING = [
    ("How long should I boil an egg for a soft yolk?",
     "For a soft, runny yolk, lower the egg into boiling water and cook it for about 6 minutes. Then cool it in cold "
     "water for a minute so it is easy to peel."),
    ("How do I cook plain white rice on the stove?",
     "Rinse 1 cup of rice, then add it to a pot with 2 cups of water and a pinch of salt. Bring it to a boil, cover, "
     "and simmer on low heat for about 18 minutes. Let it rest for 5 minutes with the lid on, then fluff it with a "
     "fork."),
    ("Why should I let meat rest after cooking?",
     "Resting lets the juices settle back into the meat instead of running out when you cut it. A steak needs about "
     "5 minutes, and a large roast about 15 minutes."),
    ("What can I use instead of buttermilk?",
     "Stir 1 tablespoon of lemon juice or white vinegar into 1 cup of milk and let it stand for 5 minutes. It will "
     "thicken slightly and work well in pancakes and baking."),
    ("How do I stop pasta from sticking together?",
     "Use plenty of water, about 4 litres for 500 grams of pasta, and stir during the first two minutes of cooking. "
     "Drain it as soon as it is done and toss it with the sauce right away."),
    ("How can I tell if an egg is still fresh?",
     "Place the egg in a bowl of cold water. A fresh egg sinks and lies flat, while an egg that floats is old and "
     "should be thrown away."),
    ("What is the difference between baking soda and baking powder?",
     "Baking soda is pure sodium bicarbonate and needs an acid, such as yogurt or lemon juice, to make batter rise. "
     "Baking powder already contains an acid, so it only needs moisture and heat."),
    ("How do I make a simple vinaigrette?",
     "Whisk 3 tablespoons of olive oil with 1 tablespoon of vinegar, a small spoon of mustard, and a pinch of salt "
     "and pepper. Taste it and adjust the balance to your liking."),
    ("How long can cooked leftovers stay in the fridge?",
     "Most cooked leftovers are safe for 3 to 4 days in the fridge. Cool them quickly and store them in closed "
     "containers."),
    ("How do I chop an onion without crying so much?",
     "Chill the onion for 15 minutes before cutting and use a very sharp knife. A sharp blade crushes fewer cells, so "
     "less of the irritating gas is released."),
    ("What does it mean to simmer?",
     "To simmer means to cook a liquid just below boiling, with small bubbles rising gently to the surface. It cooks "
     "food evenly without breaking it apart."),
    ("How do I keep cut avocado from turning brown?",
     "Brush the cut surface with lemon or lime juice and wrap it tightly in plastic wrap. Keeping air away from the "
     "flesh slows the browning."),
    ("How can I fix a soup that is too salty?",
     "Add more unsalted liquid, such as water or stock, or add extra vegetables or rice to spread the salt out. A "
     "squeeze of lemon juice can also balance the taste."),
    ("What is a quick healthy breakfast idea?",
     "Try plain yogurt with oats, a handful of berries, and a few nuts. It takes two minutes and gives you protein, "
     "fibre, and lasting energy."),
    ("How do I know when pancakes are ready to flip?",
     "Flip a pancake when bubbles appear on the surface and begin to pop, and the edges look dry. This usually takes "
     "about 2 minutes on medium heat."),
    ("How should I store fresh herbs like parsley?",
     "Trim the stems and stand the herbs in a glass of water, like flowers, then cover them loosely with a plastic "
     "bag and keep them in the fridge. Change the water every few days."),
    ("What temperature should chicken reach to be safe?",
     "Chicken is safe to eat when the thickest part reaches 74 °C (165 °F). A meat thermometer is the most reliable "
     "way to check."),
    ("Why does bread go stale?",
     "Bread goes stale mainly because its starch slowly recrystallises and pushes water out, which makes it firm and "
     "dry. Warming it briefly in the oven can soften it again."),
    ("How do I make mashed potatoes creamy?",
     "Boil peeled potatoes until soft, drain them well, and mash them while hot with warm milk and butter. Avoid a "
     "blender, which makes them gluey."),
    ("Can I freeze bananas?",
     "Yes, you can. Peel them first, slice them if you like, and freeze them in a bag. Frozen bananas are great for "
     "smoothies and banana bread."),
    ("What is the easiest way to peel garlic?",
     "Press the clove firmly with the flat side of a knife until the skin cracks. The skin will then slip off "
     "easily."),
]

HEALTH = [
    ("How much water should I drink each day?",
     "Many adults need around 2 litres of fluid a day, but needs vary with body size, activity, and weather. A simple "
     "sign is pale yellow urine; drink more when you exercise or it is hot."),
    ("How many hours of sleep do adults need?",
     "Most adults need 7 to 9 hours of sleep a night. Going to bed and waking up at regular times helps you sleep "
     "better."),
    ("How long should I wash my hands?",
     "Wash your hands with soap and water for at least 20 seconds, scrubbing the backs, between the fingers, and "
     "under the nails. Then rinse and dry them well."),
    ("What is a normal resting heart rate?",
     "For most adults, a normal resting heart rate is between 60 and 100 beats per minute. Fit people often have a "
     "lower rate."),
    ("How much exercise should adults get each week?",
     "Health guidelines suggest at least 150 minutes of moderate activity a week, such as brisk walking, plus "
     "muscle-strengthening exercise on two days."),
    ("What should I do for a minor burn?",
     "Cool the burn under cool running water for about 20 minutes, then cover it loosely with a clean dressing. Do "
     "not use ice or butter, and seek medical help if the burn is large or blistered."),
    ("Why is sunscreen important?",
     "Sunscreen protects your skin from ultraviolet rays, which cause sunburn, skin ageing, and skin cancer. Use a "
     "broad-spectrum SPF 30 or higher and reapply it every two hours outdoors."),
    ("How can I reduce screen-related eye strain?",
     "Follow the 20-20-20 rule: every 20 minutes, look at something 20 feet away for 20 seconds. Good lighting and "
     "regular blinking also help."),
    ("What are good sources of fibre?",
     "Good sources of fibre include beans, lentils, oats, whole-grain bread, fruit, vegetables, nuts, and seeds. "
     "Increase fibre gradually and drink enough water."),
    ("How can I fall asleep more easily?",
     "Keep a regular bedtime, avoid caffeine in the afternoon, and put screens away an hour before bed. A cool, dark, "
     "quiet bedroom also helps."),
    ("Is it bad to skip breakfast?",
     "Skipping breakfast is not harmful for most healthy adults. What matters more is the overall quality and amount "
     "of food you eat during the day."),
    ("What is a healthy way to handle stress?",
     "Regular exercise, enough sleep, slow breathing, and talking with someone you trust all help with stress. If "
     "stress feels overwhelming, a doctor or counsellor can help."),
    ("How often should I replace my toothbrush?",
     "Replace your toothbrush every 3 to 4 months, or sooner if the bristles are frayed or you have been ill."),
    ("What does a balanced plate look like?",
     "Fill half your plate with vegetables and fruit, a quarter with whole grains, and a quarter with protein such as "
     "beans, fish, eggs, or chicken. Add water as your drink."),
    ("How can I stretch safely?",
     "Warm up with a few minutes of light movement first, then stretch slowly and hold each stretch for 15 to 30 "
     "seconds. Stretching should feel like gentle tension, never sharp pain."),
    ("When should I see a doctor for a fever?",
     "See a doctor if a fever is above 39.4 °C (103 °F), lasts more than three days, or comes with a stiff neck, "
     "confusion, or trouble breathing. Babies with any fever need prompt advice."),
    ("Why is walking good for you?",
     "Walking strengthens your heart, helps control weight, improves mood, and is gentle on the joints. Even a "
     "30-minute walk a day makes a difference."),
    ("What is the best way to treat a small cut?",
     "Rinse the cut with clean water, press gently to stop any bleeding, and cover it with a plaster. Keep it clean "
     "and watch for redness or swelling."),
    ("Does cracking your knuckles cause arthritis?",
     "No, studies have not found that cracking your knuckles causes arthritis. The sound comes from gas bubbles in "
     "the joint fluid."),
    ("How can I eat less sugar?",
     "Drink water instead of sweet drinks, read food labels, and choose fruit for dessert. Cutting back slowly makes "
     "it easier to stick with."),
]

WRITING = [
    ("What is the difference between \"affect\" and \"effect\"?",
     "\"Affect\" is usually a verb meaning to influence, while \"effect\" is usually a noun meaning a result. For "
     "example: the weather affects my mood, and the effect is a bad day."),
    ("When should I use \"its\" and \"it's\"?",
     "\"It's\" is short for \"it is\" or \"it has\", while \"its\" shows possession. For example: it's raining, and "
     "the dog wagged its tail."),
    ("What is the difference between \"fewer\" and \"less\"?",
     "Use \"fewer\" for things you can count and \"less\" for amounts you cannot. For example: fewer cookies, but "
     "less sugar."),
    ("How do I write a good topic sentence?",
     "A good topic sentence states the main idea of the paragraph in one clear sentence. Every other sentence in the "
     "paragraph should support it."),
    ("Can you make this sentence more concise: \"At this point in time, we are in the process of reviewing it.\"",
     "Sure: \"We are reviewing it now.\""),
    ("What is the passive voice?",
     "In the passive voice, the subject receives the action instead of doing it, as in \"The ball was thrown by "
     "Sam.\" The active version, \"Sam threw the ball\", is usually clearer."),
    ("How do I use a semicolon?",
     "Use a semicolon to join two complete sentences that are closely related, as in \"I was tired; I went to bed "
     "early.\" Do not use it before a phrase that cannot stand alone."),
    ("Please correct this sentence: \"Their going to the park tomorow.\"",
     "Here is the corrected sentence: \"They're going to the park tomorrow.\""),
    ("What is a synonym for \"happy\"?",
     "Some synonyms for \"happy\" are cheerful, glad, joyful, and content."),
    ("What is an antonym for \"ancient\"?",
     "A common antonym for \"ancient\" is \"modern\". You could also use \"new\" or \"recent\"."),
    ("Give me a catchy title for a blog post about saving money.",
     "Here is one: \"Small Changes, Big Savings: Easy Ways to Keep More of Your Money.\""),
    ("How can I make my writing easier to read?",
     "Use short sentences, common words, and one idea per paragraph. Reading your text aloud also helps you spot "
     "awkward parts."),
    ("Please fix the grammar: \"Me and him goes to school together.\"",
     "Here is the corrected sentence: \"He and I go to school together.\""),
    ("What is the difference between \"then\" and \"than\"?",
     "\"Than\" is used for comparisons, as in \"taller than me\", while \"then\" is about time or order, as in \"we "
     "ate, then we left.\""),
    ("Summarise in one sentence: \"The meeting was moved from Monday to Wednesday because the manager is travelling "
     "on Monday, and the room is booked.\"",
     "The meeting is now on Wednesday because the manager is away on Monday."),
    ("Make this sentence sound more formal: \"We got a lot of stuff done today.\"",
     "Here is a more formal version: \"We made significant progress today.\""),
    ("What is an adverb?",
     "An adverb is a word that describes a verb, an adjective, or another adverb, often telling how, when, or where. "
     "In \"She sings beautifully\", the adverb is \"beautifully\"."),
    ("How should I start a cover letter?",
     "Start by naming the job you are applying for and one strong reason you are a good fit. Keep the opening to two "
     "or three sentences."),
    ("Rewrite this sentence in the active voice: \"The cake was eaten by the children.\"",
     "Here it is in the active voice: \"The children ate the cake.\""),
    ("What is a haiku?",
     "A haiku is a short Japanese form of poem with three lines of 5, 7, and 5 syllables. It often describes a moment "
     "in nature."),
]

EMAIL = [
    ("Reword this email to sound more polite: \"Send me the report now.\"",
     "Here is a more polite version: \"Could you please send me the report when you have a moment? Thank you.\""),
    ("Make this email friendlier: \"I can't come to the meeting.\"",
     "Here is a friendlier version: \"Unfortunately, I won't be able to join the meeting. I'm sorry to miss it, and "
     "I'd be glad to catch up afterwards.\""),
    ("Rewrite this more professionally: \"Hey, where's my money? You still haven't paid.\"",
     "Here is a professional version: \"Hello, I wanted to follow up on the outstanding payment. Could you let me "
     "know when I can expect it? Thank you.\""),
    ("Reword this politely: \"Your product broke after one day. Fix it.\"",
     "Here is a polite version: \"Unfortunately, the product stopped working after one day. Could you please help me "
     "with a repair or replacement? Thank you.\""),
    ("Make this email shorter: \"I am writing to you today in order to let you know that I will unfortunately be "
     "unable to attend the event that is taking place on Friday.\"",
     "Here is a shorter version: \"Unfortunately, I can't attend the event on Friday.\""),
    ("Rewrite this to decline politely: \"No, I don't want to join your project.\"",
     "Here is a polite version: \"Thank you for inviting me to join your project. I have to decline for now, but I "
     "wish you every success with it.\""),
    ("Reword this reminder to sound kinder: \"You forgot to reply again.\"",
     "Here is a kinder version: \"Just a gentle reminder about my earlier message. I'd appreciate a reply when you "
     "have a chance.\""),
    ("Make this thank-you note warmer: \"Thanks for the gift.\"",
     "Here is a warmer version: \"Thank you so much for the lovely gift. It was very thoughtful of you, and it made "
     "my day.\""),
    ("Rewrite this more politely: \"I need the day off on Monday.\"",
     "Here is a more polite version: \"Would it be possible for me to take Monday off? Please let me know if that "
     "works for the team.\""),
    ("Reword this to sound more confident: \"I think maybe I could possibly help with the project?\"",
     "Here is a more confident version: \"I would be glad to help with the project.\""),
    ("Write a polite subject line for an email asking to reschedule a meeting.",
     "Here is one: \"Request to Reschedule Our Meeting.\""),
    ("Make this apology sound more sincere: \"Sorry for the delay.\"",
     "Here is a more sincere version: \"I'm truly sorry for the delay, and thank you for your patience. I'll make "
     "sure it doesn't happen again.\""),
    ("Rewrite this to ask for feedback politely: \"Tell me what you think of my draft.\"",
     "Here is a polite version: \"When you have time, I would really appreciate your thoughts on my draft.\""),
    ("Reword this out-of-office message to be clearer: \"Gone. Back sometime next week.\"",
     "Here is a clearer version: \"Thank you for your email. I am out of the office until Monday and will reply when "
     "I return.\""),
    ("Make this request less demanding: \"Answer my question today.\"",
     "Here is a gentler version: \"If possible, could you get back to me on this today? Thank you for your help.\""),
]

DEFINITIONS = [
    ("What does \"procrastinate\" mean?",
     "To procrastinate means to delay doing something that you should do, often by doing easier things instead."),
    ("What does \"empathy\" mean?",
     "Empathy is the ability to understand and share the feelings of another person."),
    ("What does \"ambiguous\" mean?",
     "Ambiguous means having more than one possible meaning, so it is not clear which one is intended."),
    ("What does \"resilient\" mean?",
     "Resilient means able to recover quickly from difficulties or to spring back into shape after being bent."),
    ("What does \"frugal\" mean?",
     "Frugal means careful with money, spending only what is necessary."),
    ("What does \"meticulous\" mean?",
     "Meticulous means showing great care and attention to every small detail."),
    ("What does \"nostalgia\" mean?",
     "Nostalgia is a warm, slightly sad longing for a time in the past."),
    ("What does \"candid\" mean?",
     "Candid means honest and direct, saying what you really think."),
    ("What does \"benevolent\" mean?",
     "Benevolent means kind and well-meaning, wanting to do good for others."),
    ("What does \"deadline\" mean?",
     "A deadline is the latest time or date by which something must be finished."),
    ("What does \"budget\" mean?",
     "A budget is a plan for how much money you will earn and spend over a period of time."),
    ("What does \"ephemeral\" mean?",
     "Ephemeral means lasting for only a very short time."),
    ("What does \"pragmatic\" mean?",
     "Pragmatic means dealing with things in a sensible, practical way rather than following theory."),
    ("What does \"itinerary\" mean?",
     "An itinerary is a planned route or schedule for a journey."),
    ("What does \"verbose\" mean?",
     "Verbose means using more words than are needed."),
    ("What does \"inevitable\" mean?",
     "Inevitable means certain to happen and impossible to avoid."),
    ("What does \"mitigate\" mean?",
     "To mitigate means to make something bad less severe or less serious."),
    ("What does \"hypothesis\" mean?",
     "A hypothesis is a proposed explanation that can be tested by experiment or observation."),
    ("What does \"eloquent\" mean?",
     "Eloquent means speaking or writing clearly and persuasively."),
    ("What does \"tedious\" mean?",
     "Tedious means long, slow, and boring."),
    ("What does \"versatile\" mean?",
     "Versatile means able to adapt to many different uses or activities."),
    ("What does \"reluctant\" mean?",
     "Reluctant means unwilling or hesitant to do something."),
    ("What does \"abundant\" mean?",
     "Abundant means existing in large amounts, more than enough."),
    ("What does \"diligent\" mean?",
     "Diligent means working hard and carefully."),
    ("What does \"obsolete\" mean?",
     "Obsolete means no longer used or no longer useful because something newer has replaced it."),
]

SCIENCE = [
    ("Why is the sky blue?",
     "Sunlight contains all colours, and air molecules scatter blue light much more than red light. That scattered "
     "blue light reaches our eyes from every direction, so the sky looks blue."),
    ("Why do we have seasons?",
     "Earth's axis is tilted, so as Earth travels around the Sun, each half leans towards the Sun for part of the "
     "year. That half gets more direct sunlight and longer days, which makes it summer there."),
    ("How do plants make their food?",
     "Plants make their food by photosynthesis. They use sunlight, water, and carbon dioxide to make sugar, and they "
     "release oxygen."),
    ("What is the largest planet in our solar system?",
     "Jupiter is the largest planet in our solar system. It is so big that more than a thousand Earths could fit "
     "inside it."),
    ("Why does the Moon change shape?",
     "The Moon does not really change shape. As it orbits Earth, we see different amounts of its sunlit half, which "
     "gives us the phases."),
    ("What is gravity?",
     "Gravity is the force that pulls objects towards each other. It keeps us on the ground and keeps the Moon in "
     "orbit around Earth."),
    ("How many bones are in the adult human body?",
     "An adult human body has 206 bones. Babies are born with more, and some of them fuse together as they grow."),
    ("What are the three states of matter?",
     "The three common states of matter are solid, liquid, and gas. Water, for example, can be ice, liquid water, or "
     "steam."),
    ("Why do leaves change colour in autumn?",
     "In autumn, trees stop making green chlorophyll. As the green fades, yellow and orange pigments that were there "
     "all along become visible."),
    ("What is the closest star to Earth?",
     "The closest star to Earth is the Sun. The next closest is Proxima Centauri, about 4.2 light-years away."),
    ("How fast does light travel?",
     "Light travels about 300,000 kilometres per second in empty space. Sunlight takes about 8 minutes to reach "
     "Earth."),
    ("What causes thunder?",
     "Lightning heats the air around it very quickly, making the air expand suddenly. That rapid expansion creates "
     "the loud sound we call thunder."),
    ("Why do we see lightning before we hear thunder?",
     "Light travels much faster than sound, so the flash reaches you almost at once while the sound arrives later. "
     "Sound takes about 3 seconds to travel one kilometre."),
    ("What is a mammal?",
     "A mammal is a warm-blooded animal with hair or fur that feeds its babies with milk. Dogs, whales, and humans "
     "are all mammals."),
    ("At what temperature does water boil?",
     "At sea level, water boils at 100 °C, which is 212 °F. At high altitude it boils at a lower temperature."),
    ("What is the water cycle?",
     "The water cycle is the path water takes around Earth. It evaporates, forms clouds, falls as rain or snow, and "
     "flows back into rivers and seas."),
    ("Why do magnets stick to the fridge?",
     "Fridge doors are made of steel, which contains iron. A magnet pulls on iron, so it sticks to the door."),
    ("What is the hardest natural material?",
     "Diamond is the hardest natural material. It is made of carbon atoms joined in a very strong pattern."),
    ("How many planets are in our solar system?",
     "There are eight planets in our solar system: Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus, and "
     "Neptune."),
    ("Why do we need to breathe?",
     "We breathe to take in oxygen, which our cells use to turn food into energy. Breathing out removes carbon "
     "dioxide, a waste gas."),
    ("What is an atom?",
     "An atom is the tiny basic building block of matter. It has a centre called the nucleus, with electrons moving "
     "around it."),
    ("Why does ice float on water?",
     "Ice is less dense than liquid water because its molecules lock into an open pattern when they freeze. Less "
     "dense things float."),
    ("What is the heart's job?",
     "The heart is a muscle that pumps blood around the body. The blood carries oxygen and food to every cell."),
    ("Which planet is known as the Red Planet?",
     "Mars is known as the Red Planet. Its soil contains iron oxide, which is rust, and gives it a reddish colour."),
    ("How do bees help plants?",
     "Bees carry pollen from flower to flower while they collect nectar. This pollination helps plants make fruit and "
     "seeds."),
]

CODING = [
    ("How do I reverse a string in Python?",
     "Use slicing with a step of -1: `text[::-1]` returns the string reversed."),
    ("How do I remove duplicates from a list in Python while keeping order?",
     "Use `list(dict.fromkeys(items))`, which keeps the first occurrence of each item in its original order."),
    ("How do I read a text file line by line in Python?",
     "Open it with `with open(\"notes.txt\") as f:` and then loop with `for line in f:` inside the block. You get one "
     "line at a time, and the file is closed automatically."),
    ("How do I check if a key exists in a Python dictionary?",
     "Use the `in` operator: `\"name\" in person` is True if the dictionary has that key."),
    ("How do I get the current date in Python?",
     "Import the datetime module and call `datetime.date.today()`, which returns today's date."),
    ("How do I sort a list of words by length in Python?",
     "Use `sorted(words, key=len)`, which returns a new list from shortest to longest word."),
    ("How do I convert a string to an integer in Python?",
     "Use the built-in `int` function: `int(\"42\")` returns the number 42."),
    ("How do I join a list of strings with commas in Python?",
     "Use the string method `join`: `\", \".join(names)` returns the names separated by commas."),
    ("How do I count how often each word appears in Python?",
     "Use `collections.Counter`: `Counter(text.split())` returns a mapping from each word to its count."),
    ("How do I make a list of numbers from 1 to 10 in Python?",
     "Use `list(range(1, 11))`. The end value of range is not included, so you write 11."),
    ("How do I swap two variables in Python?",
     "Use tuple assignment: `a, b = b, a` swaps the two values in one line."),
    ("How do I check the type of a variable in Python?",
     "Use `type(x)` to see its type, or `isinstance(x, int)` to test whether it is a particular type."),
    ("How do I write to a file in Python?",
     "Open it in write mode: `with open(\"out.txt\", \"w\") as f: f.write(\"hello\")`. Use mode \"a\" to add to the "
     "end instead."),
    ("How do I get the last item of a list in Python?",
     "Use index -1: `items[-1]` returns the last item."),
    ("How do I loop over a list with indexes in Python?",
     "Use `enumerate`: `for i, item in enumerate(items): print(i, item)` gives you the index and the item together."),
    ("How do I remove spaces from the start and end of a string in Python?",
     "Use the `strip` method: `\"  hello  \".strip()` returns \"hello\"."),
    ("How do I round a number to two decimal places in Python?",
     "Use `round(x, 2)`, for example `round(3.14159, 2)` returns 3.14."),
    ("How do I combine two dictionaries in Python?",
     "Use the `|` operator: `merged = a | b` makes a new dictionary, and values from b win when keys clash."),
    ("How do I generate a random number between 1 and 6 in Python?",
     "Import the random module and call `random.randint(1, 6)`, which includes both 1 and 6."),
    ("How do I check if a string contains a word in Python?",
     "Use the `in` operator: `\"cat\" in sentence` is True if the text appears in the sentence."),
    ("How do I find the length of a list in Python?",
     "Use the built-in `len` function: `len(items)` returns the number of items."),
    ("How do I make all letters in a string uppercase in Python?",
     "Use the `upper` method: `\"hello\".upper()` returns \"HELLO\"."),
    ("How do I split a sentence into words in Python?",
     "Use the `split` method: `sentence.split()` splits on any whitespace and returns a list of words."),
    ("How do I get unique values from a list in Python?",
     "Convert it to a set: `set(items)` keeps each value once, but the order is not kept."),
    ("How do I create a dictionary from two lists in Python?",
     "Use `dict(zip(keys, values))`, which pairs each key with the value at the same position."),
]

# ---------------------------------------------------------------------------------------------------------------
# Templated families: answers are computed here, exactly.
# ---------------------------------------------------------------------------------------------------------------

CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Portugal", "Lisbon"),
    ("Japan", "Tokyo"), ("China", "Beijing"), ("India", "New Delhi"), ("Canada", "Ottawa"), ("Australia", "Canberra"),
    ("Brazil", "Brasília"), ("Argentina", "Buenos Aires"), ("Mexico", "Mexico City"), ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"), ("Nigeria", "Abuja"), ("Russia", "Moscow"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Poland", "Warsaw"), ("Greece", "Athens"),
    ("Turkey", "Ankara"), ("Ireland", "Dublin"), ("Austria", "Vienna"), ("Hungary", "Budapest"),
    ("the Czech Republic", "Prague"), ("Belgium", "Brussels"), ("South Korea", "Seoul"), ("Thailand", "Bangkok"),
    ("Vietnam", "Hanoi"), ("Peru", "Lima"), ("Chile", "Santiago"), ("Colombia", "Bogotá"), ("Morocco", "Rabat"),
    ("Ghana", "Accra"), ("Ethiopia", "Addis Ababa"), ("New Zealand", "Wellington"), ("Iceland", "Reykjavík"),
    ("Cuba", "Havana"), ("the Philippines", "Manila"), ("Pakistan", "Islamabad"), ("Iran", "Tehran"),
    ("Saudi Arabia", "Riyadh"), ("Ukraine", "Kyiv"), ("Romania", "Bucharest"), ("Croatia", "Zagreb"),
    ("Bulgaria", "Sofia"), ("Jamaica", "Kingston"),
]

WORDS = [
    "apple", "banana", "strawberry", "elephant", "mississippi", "bookkeeper", "committee", "balloon", "pepper",
    "library", "computer", "umbrella", "necessary", "teacher", "butterfly", "chocolate", "giraffe", "tomorrow",
    "address", "success", "grammar", "kangaroo", "pineapple", "window", "rhythm", "mountain", "yesterday", "coffee",
    "parallel", "assessment", "bicycle", "sandwich", "dinosaur", "orange", "cucumber", "hello", "letter", "summer",
    "programming", "accommodate", "occurrence", "potato", "avocado", "planet", "garden", "notebook", "keyboard",
    "penguin", "volcano", "whisper",
]

SENTENCES = [
    "The cat sat on the mat",
    "I like to read books in the evening",
    "Please close the door when you leave",
    "The sun rises in the east",
    "We are going to the beach tomorrow",
    "My brother plays the guitar very well",
    "Water boils at one hundred degrees",
    "She bought fresh bread at the market this morning",
    "Dogs love to run in the park",
    "Reading every day makes you a better writer",
    "The train leaves at half past seven",
    "Bees make honey from the nectar of flowers",
    "Can you help me carry these boxes upstairs",
    "Our team won the game last night",
    "A healthy breakfast gives you energy",
    "He forgot his umbrella at the office again",
    "The library is closed on Sundays",
    "Learning a new language takes patience and practice",
]

LIST_WORDS = [
    "pear", "apple", "mango", "kiwi", "grape", "lemon", "cherry", "plum", "peach", "fig", "melon", "lime", "orange",
    "banana", "carrot", "onion", "pepper", "leek", "bean", "pea", "tiger", "zebra", "otter", "horse", "camel",
    "eagle", "whale", "mouse", "panda", "koala",
]

UNIT_RULES = [
    # (from unit (plural), to unit (plural), factor, op, exact statement of the factor, value choices)
    ("inches", "centimetres", Decimal("2.54"), "×", "One inch is exactly 2.54 centimetres", range(1, 61)),
    ("feet", "metres", Decimal("0.3048"), "×", "One foot is exactly 0.3048 metres", range(1, 101)),
    ("miles", "kilometres", Decimal("1.609344"), "×", "One mile is exactly 1.609344 kilometres", range(1, 101)),
    ("kilometres", "miles", Decimal("1.609344"), "÷", "One mile is exactly 1.609344 kilometres", range(1, 101)),
    ("pounds", "kilograms", Decimal("0.45359237"), "×", "One pound is exactly 0.45359237 kilograms", range(1, 201)),
    ("kilograms", "pounds", Decimal("0.45359237"), "÷", "One pound is exactly 0.45359237 kilograms", range(1, 121)),
    ("centimetres", "inches", Decimal("2.54"), "÷", "One inch is exactly 2.54 centimetres", range(1, 201)),
    ("litres", "millilitres", Decimal("1000"), "×", "One litre is 1000 millilitres", range(1, 21)),
    ("hours", "minutes", Decimal("60"), "×", "One hour has 60 minutes", range(2, 49)),
    ("minutes", "seconds", Decimal("60"), "×", "One minute has 60 seconds", range(2, 121)),
    ("days", "hours", Decimal("24"), "×", "One day has 24 hours", range(2, 31)),
    ("weeks", "days", Decimal("7"), "×", "One week has 7 days", range(2, 53)),
    ("metres", "centimetres", Decimal("100"), "×", "One metre is 100 centimetres", range(2, 51)),
    ("kilometres", "metres", Decimal("1000"), "×", "One kilometre is 1000 metres", range(2, 43)),
    ("grams", "kilograms", Decimal("1000"), "÷", "One kilogram is 1000 grams", range(100, 5001, 50)),
]

PY_EXPRESSIONS = [
    # (expression template, explanation); {nums}, {words}, {word}, {n} are filled in.
    ("max({nums})", "The `max` function returns the largest item"),
    ("min({nums})", "The `min` function returns the smallest item"),
    ("sum({nums})", "The `sum` function adds up all the items"),
    ("len({nums})", "The `len` function returns the number of items"),
    ("sorted({nums})", "The `sorted` function returns a new list in ascending order"),
    ("sorted({nums}, reverse=True)", "With `reverse=True`, `sorted` returns the items in descending order"),
    ("{nums}[::-1]", "Slicing with a step of -1 returns the list reversed"),
    ("[x * 2 for x in {nums}]", "The list comprehension doubles each number"),
    ("[x for x in {nums} if x % 2 == 0]", "The list comprehension keeps only the even numbers"),
    ("[x ** 2 for x in {nums}]", "The list comprehension squares each number"),
    ("'{word}'.upper()", "The `upper` method returns the string in capital letters"),
    ("'{word}'[::-1]", "Slicing with a step of -1 returns the string reversed"),
    ("len('{word}')", "The `len` function counts the characters in the string"),
    ("'{word}'.count('{letter}')", "The `count` method counts how many times the substring appears"),
    ("'{word}'.capitalize()", "The `capitalize` method makes the first letter a capital"),
    ("'{word}'[0]", "Index 0 is the first character of the string"),
    ("'{word}'[-1]", "Index -1 is the last character of the string"),
    ("', '.join({words})", "The `join` method puts the separator between the strings"),
    ("sorted({words})", "The `sorted` function puts strings in alphabetical order"),
    ("sorted({words}, key=len)", "With `key=len`, `sorted` orders the strings by length, keeping ties in order"),
    ("{n} // 7", "The `//` operator divides and rounds down to a whole number"),
    ("{n} % 7", "The `%` operator returns the remainder of the division"),
    ("divmod({n}, 7)", "The `divmod` function returns the quotient and the remainder together"),
    ("abs(-{n})", "The `abs` function returns the absolute value"),
    ("str({n}) + '!'", "The `str` function turns the number into text, which can then be joined to other text"),
    ("list(range({small}))", "The `range` function counts from 0 up to, but not including, the number given"),
    ("{nums}.index({first})", "The `index` method returns the position of the first matching item, counting from 0"),
    ("{first} in {nums}", "The `in` operator checks whether the item is in the list"),
]

PY_FUNCTIONS = [
    ("returns double the number it is given", "double", "def double(x):\n    return x * 2", "double({a})"),
    ("returns the square of a number", "square", "def square(x):\n    return x * x", "square({a})"),
    ("checks whether a number is even", "is_even", "def is_even(n):\n    return n % 2 == 0", "is_even({a})"),
    ("returns the average of a list of numbers", "average",
     "def average(numbers):\n    return sum(numbers) / len(numbers)", "average([{a}, {b}, {c}, {d}])"),
    ("counts the vowels in a string", "count_vowels",
     "def count_vowels(text):\n    return sum(1 for ch in text.lower() if ch in \"aeiou\")", "count_vowels('{w}')"),
    ("reverses a string", "reverse", "def reverse(text):\n    return text[::-1]", "reverse('{w}')"),
    ("returns the largest of three numbers", "largest",
     "def largest(a, b, c):\n    return max(a, b, c)", "largest({a}, {b}, {c})"),
    ("converts Celsius to Fahrenheit", "to_fahrenheit",
     "def to_fahrenheit(celsius):\n    return celsius * 9 / 5 + 32", "to_fahrenheit({t})"),
    ("checks whether a word is a palindrome", "is_palindrome",
     "def is_palindrome(word):\n    word = word.lower()\n    return word == word[::-1]", "is_palindrome('{p}')"),
    ("returns the factorial of a number", "factorial",
     "def factorial(n):\n    result = 1\n    for i in range(2, n + 1):\n        result *= i\n    return result",
     "factorial({f})"),
    ("counts the words in a sentence", "word_count",
     "def word_count(sentence):\n    return len(sentence.split())", "word_count('{s}')"),
    ("returns only the positive numbers from a list", "positives",
     "def positives(numbers):\n    return [n for n in numbers if n > 0]", "positives([{a}, -{b}, {c}, -{d}])"),
]

PALINDROMES = ["level", "racecar", "noon", "kayak", "Madam", "python", "garden", "refer", "rotor", "window"]



def _fmt_date(d: dt.date) -> str:
    return f"{d:%B} {d.day}, {d.year}"


def _dec(x: Decimal) -> str:
    """A Decimal written plainly, without trailing zeros or exponent."""
    s = format(x.normalize(), "f")
    return s


def _round2(x: Decimal) -> str:
    return _dec(x.quantize(Decimal("0.01")))


def _nums(rng: random.Random, k: int, lo: int = 1, hi: int = 99) -> list[int]:
    return rng.sample(range(lo, hi + 1), k)


def _join_list(items: list) -> str:
    return ", ".join(str(x) for x in items)


def _spell(word: str) -> str:
    return "-".join(word)


def _add_steps(a: int, b: int, sign: str) -> str:
    """'347 + 200 = 547, 547 + 80 = 627, and 627 + 5 = 632' (place-value steps)."""
    parts = [p for p in (b // 100 * 100, b // 10 % 10 * 10, b % 10) if p]
    steps, cur = [], a
    for p in parts:
        nxt = cur + p if sign == "+" else cur - p
        steps.append(f"{cur} {sign} {p} = {nxt}")
        cur = nxt
    if len(steps) == 1:
        return steps[0]
    return ", ".join(steps[:-1]) + ", and " + steps[-1]


def arithmetic_examples(rng: random.Random, n: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    kinds = ["add", "sub", "mul", "div", "divr", "pct", "sq"]
    add_q = ["What is {a} + {b}?", "Can you add {a} and {b}?", "What is the sum of {a} and {b}?"]
    sub_q = ["What is {a} - {b}?", "Can you subtract {b} from {a}?", "What is {a} minus {b}?"]
    mul_q = ["What is {a} × {b}?", "Can you multiply {a} by {b}?", "What is {a} times {b}?"]
    div_q = ["What is {a} ÷ {b}?", "Can you divide {a} by {b}?"]
    i = 0
    while len(out) < n:
        kind = kinds[i % len(kinds)]
        i += 1
        if kind == "add":
            a, b = rng.randint(12, 899), rng.randint(12, 899)
            q = rng.choice(add_q).format(a=a, b=b)
            ans = f"Add {b} to {a} in parts: {_add_steps(a, b, '+')}. The answer is {a + b}."
        elif kind == "sub":
            a, b = sorted((rng.randint(12, 999), rng.randint(11, 998)), reverse=True)
            if a == b:
                continue
            q = rng.choice(sub_q).format(a=a, b=b)
            ans = f"Subtract {b} from {a} in parts: {_add_steps(a, b, '-')}. The answer is {a - b}."
        elif kind == "mul":
            a, b = rng.randint(12, 99), rng.randint(3, 19)
            tens, ones = a // 10 * 10, a % 10
            q = rng.choice(mul_q).format(a=a, b=b)
            if ones:
                ans = (f"Split {a} into {tens} and {ones}: {tens} × {b} = {tens * b} and {ones} × {b} = {ones * b}, "
                       f"so {tens * b} + {ones * b} = {a * b}. The answer is {a * b}.")
            else:
                ans = f"{a} × {b} = {a * b}. The answer is {a * b}."
        elif kind == "div":
            b, c = rng.randint(2, 12), rng.randint(3, 60)
            a = b * c
            q = rng.choice(div_q).format(a=a, b=b)
            ans = f"Since {b} × {c} = {a}, {a} ÷ {b} = {c}. The answer is {c}."
        elif kind == "divr":
            b, c = rng.randint(3, 12), rng.randint(3, 40)
            r = rng.randint(1, b - 1)
            a = b * c + r
            q = f"What is {a} divided by {b}, with the remainder?"
            ans = (f"{b} × {c} = {b * c} and {a} - {b * c} = {r}, so {a} divided by {b} is {c} with a remainder of "
                   f"{r}. The answer is {c} remainder {r}.")
        elif kind == "pct":
            p = rng.choice([5, 10, 15, 20, 25, 30, 40, 50, 60, 75, 80])
            base = rng.choice([20, 40, 60, 80, 120, 160, 200, 240, 300, 400, 500, 640, 800, 1000])
            frac = Decimal(p) / 100
            val = frac * base
            q = f"What is {p}% of {base}?"
            ans = f"{p}% means {p} ÷ 100 = {_dec(frac)}, so {p}% of {base} is {_dec(frac)} × {base} = {_dec(val)}. " \
                  f"The answer is {_dec(val)}."
        else:
            a = rng.randint(11, 40)
            q = f"What is {a} squared?"
            ans = f"{a} squared means {a} × {a} = {a * a}. The answer is {a * a}."
        out.append((q, ans))
    return out


def unit_examples(rng: random.Random, n: int) -> list[tuple[str, str]]:
    out = []
    i = 0
    while len(out) < n:
        slot = i % (len(UNIT_RULES) + 2)
        i += 1
        if slot == len(UNIT_RULES):
            c = rng.randrange(-20, 41, 5)
            m = Decimal(c) * Decimal("1.8")
            f = m + 32
            q = f"What is {c} °C in Fahrenheit?"
            ans = (f"To convert Celsius to Fahrenheit, multiply by 1.8 and add 32: {c} × 1.8 = {_dec(m)} and "
                   f"{_dec(m)} + 32 = {_dec(f)}. So {c} °C is {_dec(f)} °F.")
        elif slot == len(UNIT_RULES) + 1:
            k = rng.randint(-4, 14)
            fahr = 32 + 9 * k
            c = Decimal(fahr - 32) / Decimal("1.8")
            q = f"What is {fahr} °F in Celsius?"
            ans = (f"To convert Fahrenheit to Celsius, subtract 32 and divide by 1.8: {fahr} - 32 = {fahr - 32} and "
                   f"{fahr - 32} ÷ 1.8 = {_dec(c)}. So {fahr} °F is {_dec(c)} °C.")
        else:
            src, dst, factor, op, fact, values = UNIT_RULES[slot]
            v = rng.choice(list(values))
            exact = Decimal(v) * factor if op == "×" else Decimal(v) / factor
            q = rng.choice([f"How many {dst} are in {v} {src}?", f"Convert {v} {src} to {dst}."])
            if exact == exact.quantize(Decimal("0.0001")):
                ans = f"{fact}, so {v} {src} is {v} {op} {_dec(factor)} = {_dec(exact)} {dst}."
            else:
                ans = f"{fact}, so {v} {src} is {v} {op} {_dec(factor)} ≈ {_round2(exact)} {dst}."
        out.append((q, ans))
    return out


def counting_examples(rng: random.Random, n: int) -> list[tuple[str, str]]:
    out = []
    i = 0
    while len(out) < n:
        kind = i % 4
        i += 1
        if kind == 0:
            w = rng.choice(WORDS)
            letter = rng.choice(sorted(set(w)))
            k = w.count(letter)
            times = "once" if k == 1 else f"{k} times"
            q = f"How many times does the letter \"{letter}\" appear in \"{w}\"?"
            ans = f"The letter \"{letter}\" appears {times} in \"{w}\": {_spell(w)}."
        elif kind == 1:
            w = rng.choice(WORDS)
            q = f"How many letters are in the word \"{w}\"?"
            ans = f"The word \"{w}\" has {len(w)} letters: {_spell(w)}."
        elif kind == 2:
            s = rng.choice(SENTENCES)
            words = s.split()
            q = f"How many words are in the sentence \"{s}\"?"
            ans = f"The sentence has {len(words)} words: {', '.join(words)}."
        else:
            w = rng.choice([w for w in WORDS if any(ch in "aeiou" for ch in w)])
            vowels = [ch for ch in w if ch in "aeiou"]
            q = f"How many vowels are in the word \"{w}\"?"
            ans = f"The word \"{w}\" has {len(vowels)} vowels: {', '.join(vowels)}."
        out.append((q, ans))
    return out


def list_examples(rng: random.Random, n: int) -> list[tuple[str, str]]:
    out = []
    i = 0
    while len(out) < n:
        kind = i % 6
        i += 1
        nums = _nums(rng, rng.randint(4, 7))
        words = rng.sample(LIST_WORDS, rng.randint(4, 6))
        if kind == 0:
            q = f"Sort these numbers from smallest to largest: {_join_list(nums)}."
            ans = f"Here they are from smallest to largest: {_join_list(sorted(nums))}."
        elif kind == 1:
            q = f"Sort these numbers from largest to smallest: {_join_list(nums)}."
            ans = f"Here they are from largest to smallest: {_join_list(sorted(nums, reverse=True))}."
        elif kind == 2:
            q = f"Put these words in alphabetical order: {_join_list(words)}."
            ans = f"Here they are in alphabetical order: {_join_list(sorted(words))}."
        elif kind == 3:
            q = f"Reverse this list: {_join_list(words)}."
            ans = f"Here is the list reversed: {_join_list(words[::-1])}."
        elif kind == 4:
            which = rng.choice(["largest", "smallest"])
            val = max(nums) if which == "largest" else min(nums)
            q = f"What is the {which} number in this list: {_join_list(nums)}?"
            ans = f"The {which} number in the list is {val}."
        else:
            base = nums[:4]
            dup = base + [rng.choice(base), rng.choice(base)]
            rng.shuffle(dup)
            uniq = list(dict.fromkeys(dup))
            q = f"Remove the duplicates from this list and keep the original order: {_join_list(dup)}."
            ans = f"Here is the list without duplicates: {_join_list(uniq)}."
        out.append((q, ans))
    return out


def capital_examples(rng: random.Random, n: int) -> list[tuple[str, str]]:
    out = []
    forward = ["What is the capital of {c}?", "Which city is the capital of {c}?", "What's the capital city of {c}?"]
    for country, city in CAPITALS:
        q = rng.choice(forward).format(c=country)
        out.append((q, f"The capital of {country} is {city}."))
    for country, city in rng.sample(CAPITALS, min(len(CAPITALS), max(0, n - len(CAPITALS)))):
        out.append((f"{city} is the capital of which country?", f"{city} is the capital of {country}."))
    return out[:n]


def date_examples(rng: random.Random, n: int) -> list[tuple[str, str]]:
    out = []
    start, span = dt.date(2020, 1, 1), 365 * 12
    i = 0
    while len(out) < n:
        kind = i % 3
        i += 1
        d1 = start + dt.timedelta(days=rng.randrange(span))
        if kind == 0:
            d2 = d1 + dt.timedelta(days=rng.randint(2, 400))
            days = (d2 - d1).days
            q = f"How many days are there from {_fmt_date(d1)} to {_fmt_date(d2)}?"
            ans = f"There are {days} days from {_fmt_date(d1)} to {_fmt_date(d2)}."
        elif kind == 1:
            q = f"What day of the week is {_fmt_date(d1)}?"
            ans = f"{_fmt_date(d1)} is a {d1:%A}."
        else:
            k = rng.randint(2, 120)
            d2 = d1 + dt.timedelta(days=k)
            q = f"What date is {k} days after {_fmt_date(d1)}?"
            ans = f"{k} days after {_fmt_date(d1)} is {_fmt_date(d2)}."
        out.append((q, ans))
    return out


def python_examples(rng: random.Random, n: int) -> list[tuple[str, str]]:
    out = []
    n_funcs = len(PY_FUNCTIONS)
    for desc, name, code, call_t in PY_FUNCTIONS:
        a, b, c, d = _nums(rng, 4, 1, 50)
        call = call_t.format(a=a, b=b, c=c, d=d, w=rng.choice(WORDS), t=rng.randrange(-10, 41, 5),
                             p=rng.choice(PALINDROMES), f=rng.randint(3, 7), s=rng.choice(SENTENCES))
        env: dict = {}
        exec(code, env)  # noqa: S102 - our own constant code
        result = eval(call, env)  # noqa: S307 - our own constant code
        q = f"Write a Python function called `{name}` that {desc}."
        ans = f"Here is a simple version:\n\n```python\n{code}\n```\n\nFor example, `{call}` returns `{result!r}`."
        out.append((q, ans))
    i = 0
    while len(out) < n:
        template, why = PY_EXPRESSIONS[i % len(PY_EXPRESSIONS)]
        i += 1
        nums = _nums(rng, rng.randint(3, 5))
        words = rng.sample(LIST_WORDS, 3)
        word = rng.choice(WORDS)
        expr = template.format(nums=nums, words=words, word=word, letter=rng.choice(sorted(set(word))),
                               n=rng.randint(20, 200), small=rng.randint(3, 7), first=nums[0])
        result = eval(expr, {})  # noqa: S307 - our own constant code
        q = rng.choice([f"What does `{expr}` return in Python?", f"In Python, what is the result of `{expr}`?"])
        out.append((q, f"`{expr}` returns `{result!r}`. {why}."))
    assert len(out) >= n_funcs
    return out[:n]

# ---------------------------------------------------------------------------------------------------------------
# Public-domain quotations (authors dead for more than 70 years), for the format-template demo.
# ---------------------------------------------------------------------------------------------------------------

QUOTES = [
    ("William Shakespeare", "To be, or not to be: that is the question.", ["life", "literature"]),
    ("William Shakespeare", "All the world's a stage, and all the men and women merely players.", ["life"]),
    ("William Shakespeare", "The course of true love never did run smooth.", ["love"]),
    ("William Shakespeare", "Brevity is the soul of wit.", ["wit", "writing"]),
    ("William Shakespeare", "Neither a borrower nor a lender be.", ["money", "advice"]),
    ("William Shakespeare", "This above all: to thine own self be true.", ["honesty", "advice"]),
    ("William Shakespeare", "Some are born great, some achieve greatness, and some have greatness thrust upon 'em.",
     ["greatness"]),
    ("William Shakespeare", "The fault, dear Brutus, is not in our stars, but in ourselves.", ["responsibility"]),
    ("William Shakespeare", "Cowards die many times before their deaths; the valiant never taste of death but once.",
     ["courage"]),
    ("William Shakespeare", "We are such stuff as dreams are made on, and our little life is rounded with a sleep.",
     ["life", "dreams"]),
    ("William Shakespeare", "What's in a name? That which we call a rose by any other name would smell as sweet.",
     ["love", "names"]),
    ("William Shakespeare", "Lord, what fools these mortals be!", ["wit"]),
    ("William Shakespeare", "The better part of valour is discretion.", ["courage", "wisdom"]),
    ("William Shakespeare", "Uneasy lies the head that wears a crown.", ["power"]),
    ("William Shakespeare", "Love all, trust a few, do wrong to none.", ["love", "advice"]),
    ("William Shakespeare", "Though she be but little, she is fierce.", ["courage"]),
    ("William Shakespeare", "There is nothing either good or bad, but thinking makes it so.", ["mind"]),
    ("William Shakespeare", "All that glisters is not gold.", ["wisdom"]),
    ("William Shakespeare", "The quality of mercy is not strained.", ["mercy"]),
    ("William Shakespeare", "Parting is such sweet sorrow.", ["love"]),
    ("William Shakespeare", "Our doubts are traitors, and make us lose the good we oft might win by fearing to "
     "attempt.", ["courage", "doubt"]),
    ("William Shakespeare", "How far that little candle throws his beams! So shines a good deed in a naughty world.",
     ["kindness"]),
    ("Benjamin Franklin", "Early to bed and early to rise, makes a man healthy, wealthy, and wise.",
     ["health", "advice"]),
    ("Benjamin Franklin", "Three may keep a secret, if two of them are dead.", ["wit", "secrets"]),
    ("Benjamin Franklin", "Well done is better than well said.", ["action"]),
    ("Benjamin Franklin", "In this world nothing can be said to be certain, except death and taxes.",
     ["wit", "life"]),
    ("Benjamin Franklin", "Lost time is never found again.", ["time"]),
    ("Benjamin Franklin", "Fish and visitors stink in three days.", ["wit"]),
    ("Benjamin Franklin", "An ounce of prevention is worth a pound of cure.", ["wisdom", "health"]),
    ("Benjamin Franklin", "He that lies down with dogs, shall rise up with fleas.", ["advice"]),
    ("Benjamin Franklin", "Wish not so much to live long as to live well.", ["life"]),
    ("Mark Twain", "Always do right. This will gratify some people and astonish the rest.", ["wit", "ethics"]),
    ("Mark Twain", "Man is the only animal that blushes. Or needs to.", ["wit", "humanity"]),
    ("Mark Twain", "Let us endeavor so to live that when we come to die even the undertaker will be sorry.",
     ["life", "wit"]),
    ("Mark Twain", "Courage is resistance to fear, mastery of fear, not absence of fear.", ["courage"]),
    ("Mark Twain", "When angry, count four; when very angry, swear.", ["wit", "anger"]),
    ("Mark Twain", "Nothing so needs reforming as other people's habits.", ["wit", "habits"]),
    ("Mark Twain", "Habit is habit, and not to be flung out of the window by any man, but coaxed down-stairs a step "
     "at a time.", ["habits"]),
    ("Mark Twain", "Truth is stranger than fiction, but it is because Fiction is obliged to stick to possibilities; "
     "Truth isn't.", ["truth", "writing"]),
    ("Oscar Wilde", "I can resist everything except temptation.", ["wit"]),
    ("Oscar Wilde", "We are all in the gutter, but some of us are looking at the stars.", ["hope"]),
    ("Oscar Wilde", "There is only one thing in the world worse than being talked about, and that is not being "
     "talked about.", ["wit", "fame"]),
    ("Oscar Wilde", "To love oneself is the beginning of a lifelong romance.", ["love", "wit"]),
    ("Oscar Wilde", "Experience is the name every one gives to their mistakes.", ["experience", "wit"]),
    ("Oscar Wilde", "The truth is rarely pure and never simple.", ["truth"]),
    ("Oscar Wilde", "A cynic is a man who knows the price of everything and the value of nothing.", ["wit", "value"]),
    ("Oscar Wilde", "The only way to get rid of a temptation is to yield to it.", ["wit"]),
    ("Oscar Wilde", "Memory, my dear Cecily, is the diary that we all carry about with us.", ["memory"]),
    ("Abraham Lincoln", "A house divided against itself cannot stand.", ["unity", "politics"]),
    ("Abraham Lincoln", "With malice toward none, with charity for all.", ["kindness", "politics"]),
    ("Abraham Lincoln", "Government of the people, by the people, for the people, shall not perish from the earth.",
     ["democracy"]),
    ("Abraham Lincoln", "We are not enemies, but friends. We must not be enemies.", ["unity"]),
    ("Abraham Lincoln", "As I would not be a slave, so I would not be a master. This expresses my idea of democracy.",
     ["democracy", "freedom"]),
    ("Abraham Lincoln", "Those who deny freedom to others, deserve it not for themselves.", ["freedom"]),
    ("Aristotle", "Man is by nature a political animal.", ["philosophy", "politics"]),
    ("Aristotle", "All men by nature desire to know.", ["philosophy", "knowledge"]),
    ("Confucius", "What you do not want done to yourself, do not do to others.", ["ethics"]),
    ("Confucius", "Learning without thought is labour lost; thought without learning is perilous.",
     ["learning", "wisdom"]),
    ("Confucius", "When you know a thing, to hold that you know it; and when you do not know a thing, to allow that "
     "you do not know it; this is knowledge.", ["knowledge", "honesty"]),
    ("Confucius", "The superior man is modest in his speech, but exceeds in his actions.", ["action", "modesty"]),
    ("Confucius", "Virtue is not left to stand alone. He who practises it will have neighbours.", ["virtue"]),
    ("Jane Austen", "It is a truth universally acknowledged, that a single man in possession of a good fortune, must "
     "be in want of a wife.", ["love", "literature"]),
    ("Jane Austen", "I declare after all there is no enjoyment like reading!", ["reading"]),
    ("Jane Austen", "There is no charm equal to tenderness of heart.", ["kindness"]),
    ("Jane Austen", "Vanity and pride are different things, though the words are often used synonymously.",
     ["pride"]),
    ("Jane Austen", "One half of the world cannot understand the pleasures of the other.", ["humanity"]),
    ("Jane Austen", "Till this moment I never knew myself.", ["self-knowledge"]),
    ("Jane Austen", "The person, be it gentleman or lady, who has not pleasure in a good novel, must be intolerably "
     "stupid.", ["reading", "wit"]),
    ("Charles Dickens", "It was the best of times, it was the worst of times.", ["literature", "history"]),
    ("Charles Dickens", "It is a far, far better thing that I do, than I have ever done.", ["sacrifice"]),
    ("Charles Dickens", "I will honour Christmas in my heart, and try to keep it all the year.", ["kindness"]),
    ("Charles Dickens", "Please, sir, I want some more.", ["literature"]),
    ("Charles Dickens", "Annual income twenty pounds, annual expenditure nineteen nineteen and six, result happiness.",
     ["money", "wit"]),
    ("Charles Dickens", "Reflect upon your present blessings, of which every man has many; not on your past "
     "misfortunes, of which all men have some.", ["gratitude"]),
    ("Edward Young", "Procrastination is the thief of time.", ["time"]),
    ("Thomas Jefferson", "I cannot live without books.", ["reading"]),
    ("George Washington", "It is better to offer no excuse than a bad one.", ["honesty", "advice"]),
    ("Henry David Thoreau", "The mass of men lead lives of quiet desperation.", ["life"]),
    ("Henry David Thoreau", "Our life is frittered away by detail. Simplify, simplify.", ["simplicity"]),
    ("Henry David Thoreau", "If a man does not keep pace with his companions, perhaps it is because he hears a "
     "different drummer.", ["individuality"]),
    ("Ralph Waldo Emerson", "A foolish consistency is the hobgoblin of little minds.", ["mind"]),
    ("Ralph Waldo Emerson", "To be great is to be misunderstood.", ["greatness"]),
    ("Ralph Waldo Emerson", "Trust thyself: every heart vibrates to that iron string.", ["self-reliance"]),
    ("Ralph Waldo Emerson", "Nothing great was ever achieved without enthusiasm.", ["enthusiasm"]),
    ("Ralph Waldo Emerson", "The only way to have a friend is to be one.", ["friendship"]),
    ("Alexander Pope", "To err is human, to forgive divine.", ["forgiveness"]),
    ("Alexander Pope", "A little learning is a dangerous thing.", ["learning"]),
    ("Alexander Pope", "Hope springs eternal in the human breast.", ["hope"]),
    ("Alexander Pope", "Fools rush in where angels fear to tread.", ["wisdom"]),
    ("Samuel Johnson", "When a man is tired of London, he is tired of life; for there is in London all that life can "
     "afford.", ["life", "cities"]),
    ("Samuel Johnson", "No man but a blockhead ever wrote, except for money.", ["writing", "wit"]),
    ("John Donne", "No man is an island, entire of itself.", ["humanity"]),
    ("Lord Acton", "Power tends to corrupt, and absolute power corrupts absolutely.", ["power", "politics"]),
    ("George Santayana", "Those who cannot remember the past are condemned to repeat it.", ["history"]),
    ("Socrates", "The unexamined life is not worth living.", ["philosophy", "life"]),
    ("Isaac Newton", "If I have seen further it is by standing on the shoulders of Giants.", ["science", "modesty"]),
    ("Francis Bacon", "Knowledge itself is power.", ["knowledge"]),
    ("Francis Bacon", "Some books are to be tasted, others to be swallowed, and some few to be chewed and digested.",
     ["reading"]),
    ("Francis Bacon", "Reading maketh a full man; conference a ready man; and writing an exact man.",
     ["reading", "writing"]),
    ("Lewis Carroll", "Why, sometimes I've believed as many as six impossible things before breakfast.",
     ["imagination"]),
    ("Lewis Carroll", "Begin at the beginning, and go on till you come to the end: then stop.", ["advice", "wit"]),
    ("Lewis Carroll", "It's no use going back to yesterday, because I was a different person then.", ["change"]),
    ("Leo Tolstoy", "Happy families are all alike; every unhappy family is unhappy in its own way.",
     ["family", "literature"]),
    ("Robert Louis Stevenson", "To travel hopefully is a better thing than to arrive.", ["travel", "hope"]),
    ("John Keats", "A thing of beauty is a joy for ever.", ["beauty"]),
    ("Alfred Tennyson", "'Tis better to have loved and lost than never to have loved at all.", ["love"]),
    ("Alfred Tennyson", "To strive, to seek, to find, and not to yield.", ["perseverance"]),
    ("Robert Burns", "The best laid schemes o' mice an' men gang aft agley.", ["plans"]),
    ("Robert Browning", "Ah, but a man's reach should exceed his grasp, or what's a heaven for?", ["ambition"]),
    ("Emily Dickinson", "\"Hope\" is the thing with feathers that perches in the soul.", ["hope"]),
    ("Emily Dickinson", "Forever is composed of nows.", ["time"]),
    ("Edgar Allan Poe", "All that we see or seem is but a dream within a dream.", ["dreams"]),
    ("Voltaire", "The best is the enemy of the good.", ["perfectionism"]),
    ("Voltaire", "We must cultivate our garden.", ["philosophy"]),
    ("René Descartes", "I think, therefore I am.", ["philosophy"]),
    ("Blaise Pascal", "The heart has its reasons which reason knows nothing of.", ["love", "philosophy"]),
    ("Blaise Pascal", "I have made this letter longer than usual, because I have not had time to make it shorter.",
     ["writing", "wit"]),
    ("Thomas Paine", "These are the times that try men's souls.", ["courage", "history"]),
    ("Frederick Douglass", "If there is no struggle, there is no progress.", ["progress", "freedom"]),
    ("Theodore Roosevelt", "Speak softly and carry a big stick; you will go far.", ["power", "politics"]),
    ("Epictetus", "Men are disturbed not by the things which happen, but by the opinions about the things.",
     ["philosophy", "mind"]),
    ("Jonathan Swift", "Vision is the art of seeing things invisible.", ["vision"]),
    ("John Milton", "The mind is its own place, and in itself can make a heaven of hell, a hell of heaven.",
     ["mind"]),
    ("John Milton", "They also serve who only stand and wait.", ["patience"]),
    ("Charlotte Brontë", "I am no bird; and no net ensnares me.", ["freedom"]),
    ("Percy Bysshe Shelley", "If Winter comes, can Spring be far behind?", ["hope"]),
    ("Arthur Conan Doyle", "When you have eliminated the impossible, whatever remains, however improbable, must be "
     "the truth.", ["logic"]),
    ("Arthur Conan Doyle", "It is a capital mistake to theorize before one has data.", ["logic", "science"]),
    ("William Wordsworth", "The Child is father of the Man.", ["childhood"]),
    ("Henry Wadsworth Longfellow", "Into each life some rain must fall.", ["life"]),
    ("Adam Smith", "It is not from the benevolence of the butcher, the brewer, or the baker, that we expect our "
     "dinner, but from their regard to their own interest.", ["economics"]),
    ("Louis Pasteur", "In the fields of observation chance favours only the prepared mind.", ["science"]),
    ("James Madison", "If men were angels, no government would be necessary.", ["politics"]),
    ("John Adams", "Facts are stubborn things.", ["truth"]),
    ("Thomas Hobbes", "The life of man, solitary, poor, nasty, brutish, and short.", ["philosophy"]),
    ("Hippocrates", "Life is short, and art long.", ["life", "learning"]),
    ("Lao Tzu", "The journey of a thousand miles begins with a single step.", ["perseverance"]),
    ("Booker T. Washington", "Success is to be measured not so much by the position that one has reached in life as "
     "by the obstacles which he has overcome while trying to succeed.", ["success"]),
]

# ---------------------------------------------------------------------------------------------------------------
# Open-ended prompts for candidate generation and PPO (answers differ in helpfulness, concision and politeness).
# ---------------------------------------------------------------------------------------------------------------

PROMPTS_HANDWRITTEN = {
    "advice": [
        "My neighbour plays loud music late at night. How should I bring it up with them?",
        "I have a job interview tomorrow and I'm nervous. Any advice?",
        "How can I stop checking my phone so often?",
        "I keep forgetting to water my plants. What can I do?",
        "What is a good way to start saving money on a small salary?",
        "How do I tell a friend that I can't lend them money?",
        "I just moved to a new city and don't know anyone. How can I make friends?",
        "How can I stay focused when working from home?",
        "My child doesn't want to read. How can I encourage them?",
        "How do I prepare for my first marathon?",
        "What should I do if I disagree with my manager in a meeting?",
        "How can I be more patient with my elderly parents?",
        "I feel tired every afternoon. What might help?",
        "How should I ask for a raise?",
        "What's a good way to learn to cook if I'm a complete beginner?",
        "How can I get better at remembering people's names?",
    ],
    "explanation": [
        "Why do airplanes leave white trails in the sky?",
        "How does a credit score work?",
        "Why do we yawn?",
        "How do vaccines teach the body to fight illness?",
        "What is inflation and why does it matter to me?",
        "How does a refrigerator keep food cold?",
        "Why do cats purr?",
        "What is the difference between weather and climate?",
        "How does compound interest work?",
        "Why does bread rise?",
        "How do noise-cancelling headphones work?",
        "Why is it harder to breathe at high altitude?",
        "What does a router do in a home network?",
        "How do solar panels turn sunlight into electricity?",
    ],
    "writing": [
        "Write a short birthday message for a coworker I don't know very well.",
        "Write a two-line poem about rain on a window.",
        "Help me write a polite note asking my landlord to fix a leaking tap.",
        "Write a short toast for my sister's wedding.",
        "Write a friendly reminder to my book club that we meet on Thursday.",
        "Write a short product description for a handmade wooden spoon.",
        "Draft a message to cancel a dinner reservation.",
        "Write a short thank-you note to a teacher at the end of the school year.",
        "Write an opening line for a mystery story.",
        "Write a short bio for a local bakery's website.",
        "Help me write a message congratulating a friend on a new job.",
        "Write a short note to welcome a new neighbour.",
        "Write a short review of a café I liked for its quiet corner and good soup.",
        "Help me write a message asking my team to fill in a short survey.",
        "Write an encouraging note for a friend who failed their driving test.",
        "Write a short speech to thank volunteers at a charity event.",
        "Write a polite message asking a seller if an item is still available.",
        "Write a short message to my class reminding them about the field trip.",
        "Write a short apology to a friend for missing their party.",
        "Help me write a short announcement that the office will be closed on Monday.",
        "Write a limerick about a forgetful cat.",
        "Write a short invitation to a neighbourhood clean-up day.",
    ],
    "creative": [
        "Invent a name and a short description for a new ice-cream flavour.",
        "Describe a sunrise over the sea in three sentences.",
        "Come up with a fun name for a family cycling team.",
        "Describe the perfect reading nook.",
        "Invent a new holiday and explain how people celebrate it.",
        "Describe a busy market to someone who has never seen one.",
        "Suggest a theme for a children's birthday party and a few ideas to go with it.",
        "Write a riddle whose answer is \"a shadow\".",
    ],
    "planning": [
        "Help me plan a relaxing Sunday at home.",
        "Plan a simple weekly workout routine for a beginner.",
        "What should I pack for a three-day hiking trip?",
        "Help me plan a small birthday party for a seven-year-old.",
        "How should I organise my week to study for three exams?",
        "Plan a budget-friendly weekend trip for two people.",
        "Suggest a morning routine that helps me feel less rushed.",
        "Help me plan meals for a busy week with little time to cook.",
        "How should I plan a garden for a small balcony?",
        "Make a checklist for moving to a new flat.",
    ],
    "opinion": [
        "Is it better to rent or buy a home?",
        "Should I learn Python or JavaScript first?",
        "Are e-books or paper books better for reading before bed?",
        "Is it worth buying an electric bike for commuting?",
        "Should I take notes by hand or on a laptop?",
        "Is it better to exercise in the morning or the evening?",
        "Should I get a cat or a dog if I live in a small flat?",
        "Is it better to pay off debt or save money first?",
        "Should children have a phone at ten years old?",
        "Is it worth learning to touch-type?",
    ],
}

PROMPT_TEMPLATES = [
    ("advice",
        "Give me three tips for {x}.",
        ["keeping a tidy kitchen", "sleeping better in hot weather", "learning a new language", "public speaking",
         "running my first 5K", "keeping houseplants alive", "studying for a maths test", "travelling with a toddler",
         "saving money on groceries", "writing a clear report", "staying calm in traffic", "making a good first "
         "impression", "reducing food waste", "starting a journal", "taking better photos with a phone",
         "staying motivated at the gym", "working in an open-plan office", "hosting a dinner party",
         "packing a carry-on bag", "reading more books", "learning to swim as an adult", "being a good listener",
         "keeping a long-distance friendship", "cutting down on coffee", "organising a small wardrobe"],
    ),
    ("explanation",
        "Explain {x} to a ten-year-old.",
        ["how the internet works", "why the ocean is salty", "what a volcano is", "how money is made",
         "why we need sleep", "what electricity is", "how a rainbow forms", "why the Moon has craters",
         "how birds fly", "what germs are", "why some things float", "how a compass works", "what a bank does",
         "why leaves are green", "how recycling works", "what an election is", "how earthquakes happen",
         "why we have time zones", "how a seed grows into a plant", "what the stock market is",
         "how our eyes see colours", "why the sea has tides", "what a calendar leap year is", "how a bicycle stays up",
         "why stars twinkle"],
    ),
    ("writing",
        "Write a short, friendly message to {x}.",
        ["a neighbour thanking them for taking in a parcel", "my team announcing that I'm leaving the company",
         "a friend I haven't spoken to in a year", "a customer apologising for a late delivery",
         "my landlord about renewing the lease", "a new colleague welcoming them to the team",
         "a parent group about the school bake sale", "a plumber asking for a quote",
         "my cousin congratulating them on graduating", "a host thanking them for a lovely dinner",
         "a volunteer group thanking them for their help", "a coach saying my son will miss practice",
         "an old teacher who helped me", "a client following up after a meeting", "my gym cancelling my membership",
         "a friend who is feeling unwell", "my manager asking to work from home on Friday",
         "a restaurant praising their service", "a neighbour inviting them to a street party",
         "a colleague thanking them for covering my shift"],
    ),
    ("planning",
        "Plan {x}.",
        ["a picnic for six people", "a one-day visit to a new city", "a quiet evening to unwind after work",
         "a family movie night", "a simple vegetarian dinner for four", "a study timetable for the week before an "
         "exam", "a rainy-day activity list for kids", "a spring cleaning weekend", "a surprise breakfast in bed",
         "a board game night with friends", "a 20-minute lunchtime walk route idea", "a low-cost date night",
         "a reading challenge for the summer", "a weekly chore chart for a shared flat",
         "a farewell lunch for a colleague", "a beginner's first week of yoga", "a packing plan for a beach holiday",
         "a garage sale", "a short camping trip for beginners", "a healthy snack list for the office"],
    ),
    ("opinion",
        "What are the pros and cons of {x}?",
        ["working a four-day week", "living in a big city", "buying a used car", "homeschooling", "owning a pet",
         "using a standing desk", "online shopping", "working night shifts", "taking a gap year",
         "living with roommates", "going to university far from home", "shopping at farmers' markets",
         "having a smart speaker at home", "cycling to work", "learning music as an adult", "freelancing",
         "cooking at home every day", "living in the countryside", "using a paper planner", "travelling alone"],
    ),
    ("etiquette",
        "How can I politely {x}?",
        ["leave a party early", "decline a wedding invitation", "ask guests to take off their shoes",
         "remind a friend about money they owe me", "end a long phone call", "ask a colleague to speak more quietly",
         "say no to extra work", "ask someone to repeat their name", "interrupt a meeting to ask a question",
         "tell a guest that dinner is not vegetarian", "ask a neighbour to trim their hedge",
         "turn down a second date", "ask for a discount", "correct someone who mispronounces my name",
         "ask for my book back", "refuse a gift I can't accept", "leave a group chat",
         "tell my host I have a food allergy", "ask my roommate to clean up", "ask a stranger to take my photo",
         "say I'm running late", "ask for help at work without seeming lost", "disagree with a friend about politics",
         "ask someone to stop smoking near me", "excuse myself from a conversation"],
    ),
    ("creative",
        "Write a two-sentence story about {x}.",
        ["a lost umbrella", "a robot learning to bake", "the last day of summer", "a cat who runs a bookshop",
         "a lighthouse keeper", "a snowman in spring", "a child's first day at school", "a forgotten birthday",
         "a kite that would not come down", "a very old tree", "a train that runs at midnight", "a shy dragon",
         "a message in a bottle", "a grandmother's recipe", "a dog waiting at the door", "the first person on Mars",
         "a key that opens every door", "a quiet library", "a broken clock", "a village without music"],
    ),
    ("explanation",
        "What is the difference between {x}?",
        ["a virus and a bacterium", "a debit card and a credit card", "baking and roasting", "a lake and a pond",
         "speed and velocity", "a crocodile and an alligator", "a town and a city", "a hurricane and a tornado",
         "RAM and storage on a computer", "a cold and the flu", "jam and jelly", "a resume and a cover letter",
         "an ocean and a sea", "a moth and a butterfly", "a violin and a viola", "a simile and a metaphor",
         "stocks and bonds", "a comet and an asteroid", "Wi-Fi and mobile data", "a hill and a mountain"],
    ),
    ("howto",
        "How do I {x}?",
        ["unclog a bathroom sink without harsh chemicals", "change a flat bicycle tyre", "iron a shirt quickly",
         "remove a coffee stain from a carpet", "back up the photos on my phone", "descale a kettle",
         "sharpen a kitchen knife", "hang a picture straight", "defrost a freezer", "wash a wool jumper",
         "set up a simple monthly budget", "make a good cup of tea", "clean a cast-iron pan",
         "get rid of fruit flies in the kitchen", "fold a fitted sheet", "start a compost bin", "tie a tie",
         "reset my router", "write a to-do list that I actually follow", "keep cut flowers fresh longer",
         "stop a squeaky door hinge", "make my phone battery last longer", "polish leather shoes",
         "clean a smelly water bottle", "plant tomatoes in pots"],
    ),
    ("advice",
        "What should I consider when choosing {x}?",
        ["a family car", "a laptop for university", "a running shoe", "a place to rent", "a bank account",
         "a dentist", "a mattress", "a hobby to take up", "a dog breed", "a holiday destination", "a gym",
         "a winter coat", "a mobile phone plan", "a school for my child", "a houseplant for a dark room",
         "a kitchen knife", "a bicycle for commuting", "a birthday present for my father", "a good password",
         "a summer job"],
    ),
]


def prompt_rows() -> list[tuple[str, str]]:
    """(category, prompt text) in a fixed order: hand-written first, then templated, category by category."""
    rows = []
    for category, texts in PROMPTS_HANDWRITTEN.items():
        rows.extend((category, t) for t in texts)
    for category, template, fills in PROMPT_TEMPLATES:
        rows.extend((category, template.format(x=x)) for x in fills)
    return rows

# ---------------------------------------------------------------------------------------------------------------
# Assembly.
# ---------------------------------------------------------------------------------------------------------------

HANDWRITTEN = {
    "cooking": COOKING,
    "health": HEALTH,
    "writing": WRITING,
    "email": EMAIL,
    "definitions": DEFINITIONS,
    "science": SCIENCE,
    "coding": CODING,
}

# category -> (generator, number of examples)
TEMPLATED = {
    "arithmetic": (arithmetic_examples, 100),
    "unit_conversion": (unit_examples, 70),
    "counting": (counting_examples, 60),
    "lists": (list_examples, 60),
    "capitals": (capital_examples, 60),
    "dates": (date_examples, 50),
    "python": (python_examples, 49),
}


def _rng(name: str) -> random.Random:
    """One independent, reproducible stream per family (string seeds are hashed with SHA-512, not hash())."""
    return random.Random(f"{SEED}-{name}")


def _unique(pairs: list[tuple[str, str]], n: int, seen: set[str]) -> list[tuple[str, str]]:
    out = []
    for q, a in pairs:
        if q not in seen:
            seen.add(q)
            out.append((q, a))
        if len(out) == n:
            break
    if len(out) < n:
        raise RuntimeError(f"only {len(out)} unique examples, wanted {n}")
    return out


def _test_indices(n: int, fraction: float, rng: random.Random) -> set[int]:
    idx = list(range(n))
    rng.shuffle(idx)
    return set(idx[: round(n * fraction)])


def build_instructions() -> list[dict]:
    by_category: dict[str, list[tuple[str, str]]] = {}
    seen: set[str] = set()
    for category, pairs in HANDWRITTEN.items():
        by_category[category] = _unique(pairs, len(pairs), seen)
    for category, (generate, n) in TEMPLATED.items():
        by_category[category] = _unique(generate(_rng(category), n + 60), n, seen)
    rows = []
    for category, pairs in by_category.items():
        test = _test_indices(len(pairs), INSTRUCTIONS_TEST_FRACTION, _rng(f"split-{category}"))
        for i, (q, a) in enumerate(pairs):
            rows.append({
                "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                "category": category,
                "split": "test" if i in test else "train",
            })
    _rng("order").shuffle(rows)
    return rows


def build_quotes() -> list[dict]:
    return [{"quote": quote, "author": author, "tags": tags} for author, quote, tags in QUOTES]


def build_prompts() -> list[dict]:
    rows = prompt_rows()
    by_category: dict[str, list[int]] = {}
    for i, (category, _) in enumerate(rows):
        by_category.setdefault(category, []).append(i)
    test: set[int] = set()
    for category, members in by_category.items():
        picked = _test_indices(len(members), PROMPTS_TEST_FRACTION, _rng(f"prompt-split-{category}"))
        test.update(members[j] for j in picked)
    return [
        {
            "prompt_id": f"p{i + 1:04d}",
            "prompt": [{"role": "user", "content": text}],
            "category": category,
            "split": "test" if i in test else "train",
        }
        for i, (category, text) in enumerate(rows)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    path.write_bytes(text.encode("utf-8"))


def build(out: Path) -> dict[str, int]:
    """Write every bundled file into ``out``; returns the row count of each file."""
    out.mkdir(parents=True, exist_ok=True)
    from workbench.data.build_preferences import build_preferences

    prompts = build_prompts()
    files = {
        "instructions.jsonl": build_instructions(),
        "quotes.jsonl": build_quotes(),
        "prompts.jsonl": prompts,
        "preferences.jsonl": build_preferences(prompts),
    }
    for name, rows in files.items():
        write_jsonl(out / name, rows)
    return {name: len(rows) for name, rows in files.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    for name, count in build(args.out).items():
        print(f"{args.out / name}: {count} rows")


if __name__ == "__main__":
    main()
