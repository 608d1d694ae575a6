"""Science problems: unit conversions and chained formulas, every conversion and product written out.

Six families (speed, force, kinetic energy, electricity, heat, pressure). The level adds unit
conversions (km, min and h, km/h, grams, tonnes, cm^2, kJ, kWh), formula steps (a from two speeds,
then F, then work; I from V and R, then P, then energy, then cost) and larger numbers, so the
trace grows with the level. Problems are built backwards from integer SI values, so every
intermediate division is exact and the answer is a finite decimal; it is checked with a relative
tolerance of 1 %.

The ``decompose`` method also orders the formulas differently from ``column``: F = m * dv / t
instead of a first, (m / 2) * v^2, P = V^2 / R, c * dT before the mass, m / A before g.
"""

from __future__ import annotations

import random
from fractions import Fraction
from typing import Any

from falcon_h1r.tasks.arithmetic import Work, add_running, divide_exact, fmt_decimal, multiply

FAMILIES = ("speed", "force", "kinetic", "electric", "heat", "pressure")
TOLERANCE = 0.01


def _shift(value: int, places: int, w: Work, what: str) -> Fraction:
    """value / 10**places, written as a decimal shift (a unit prefix change)."""
    out = Fraction(value, 10 ** places)
    w.line(f"{what}: {value} / {10 ** places} = {fmt_decimal(out)}")
    return out


def _time_text(h: int, m: int, s: int) -> str:
    parts = [f"{h} h" if h else "", f"{m} min" if m else "", f"{s} s" if s or not (h or m) else ""]
    return " ".join(p for p in parts if p)


def _to_seconds(h: int, m: int, s: int, method: str, w: Work) -> int:
    """A duration in seconds, each unit converted on its own line."""
    parts = []
    if h:
        hs = multiply(h, 3600, w, method)
        w.line(f"{h} h = {h} * 3600 s = {hs} s")
        parts.append(hs)
    if m:
        ms = multiply(m, 60, w, method)
        w.line(f"{m} min = {m} * 60 s = {ms} s")
        parts.append(ms)
    if s:
        parts.append(s)
    total = add_running(parts, w) if len(parts) > 1 else parts[0]
    w.line(f"time t = {total} s")
    return total


def _kmh_to_ms(kmh: int, method: str, w: Work) -> int:
    """km/h to m/s: times 1000 / 3600 = times 5 / 18 (the problems use multiples of 18 km/h)."""
    q = divide_exact(kmh, 18, w, method)
    v = multiply(q, 5, w, method)
    w.line(f"{kmh} km/h = {kmh} * 5 / 18 m/s = {q} * 5 = {v} m/s")
    return v


# ============================================================================== makers
def _speed(rng: random.Random, level: int) -> dict[str, Any]:
    v = rng.randint(2, 9 + 3 * level)
    if level <= 2:
        h, m, s = 0, 0, rng.randint(2, 9 + 5 * level)
    elif level <= 5:
        h, m, s = 0, rng.randint(1, level), rng.randint(1, 59)
    else:
        h, m, s = rng.randint(1, level - 4), rng.randint(1, 59), 0
    t = h * 3600 + m * 60 + s
    d = v * t
    km = level >= 2
    dist = f"{fmt_decimal(Fraction(d, 1000))} km" if km else f"{d} m"
    unit = "km/h" if level >= 5 else "m/s"
    answer = Fraction(v * 36, 10) if unit == "km/h" else Fraction(v)
    who = rng.choice(["A cyclist", "A train", "A runner", "A boat", "A drone"])
    return {"question": f"{who} covers {dist} in {_time_text(h, m, s)} at constant speed. What is its speed "
                        f"in {unit}?", "answer": fmt_decimal(answer), "unit": unit,
            "spec": {"family": "speed", "d": d, "km": km, "h": h, "m": m, "s": s, "unit": unit}}


def _force(rng: random.Random, level: int) -> dict[str, Any]:
    kmh = level >= 5
    tonnes = level >= 7
    mass = 100 * rng.randint(5, 40) if tonnes else rng.randint(2, 10 + 10 * level)
    if level <= 2:
        a = rng.randint(2, 4 + 2 * level)
        v0 = v1 = t = 0
    else:
        step = 5 if kmh else 1
        v0 = step * rng.randint(0, 2 * level)
        while True:
            v1 = v0 + step * rng.randint(1, 3 * level)
            divs = [k for k in range(2, 21) if (v1 - v0) % k == 0]
            if divs:
                break
        t = rng.choice(divs)
        a = (v1 - v0) // t
    dist = rng.randint(2, 5 * level) if level >= 9 else 0
    force = mass * a
    unit = "kJ" if dist else ("kN" if level >= 8 else "N")
    answer = Fraction(force * dist, 1000) if dist else (Fraction(force, 1000) if unit == "kN" else Fraction(force))
    mtext = f"{fmt_decimal(Fraction(mass, 1000))} t" if tonnes else f"{mass} kg"
    what = rng.choice(["cart", "car", "sled", "crate"])
    if level <= 2:
        q = f"A {mtext} {what} accelerates at {a} m/s^2. What net force acts on it, in N?"
    else:
        sp = "km/h" if kmh else "m/s"
        f0, f1 = (v0 * 18 // 5, v1 * 18 // 5) if kmh else (v0, v1)
        q = f"A {mtext} {what} speeds up from {f0} {sp} to {f1} {sp} in {t} s at constant acceleration. "
        q += (f"How much work, in kJ, does the net force do over {dist} m?" if dist
              else f"What net force acts on it, in {unit}?")
    return {"question": q, "answer": fmt_decimal(answer), "unit": unit,
            "spec": {"family": "force", "mass": mass, "tonnes": tonnes, "a": a, "v0": v0, "v1": v1, "t": t,
                     "kmh": kmh, "dist": dist, "unit": unit}}


def _kinetic(rng: random.Random, level: int) -> dict[str, Any]:
    kmh = level >= 5
    grams = level >= 6
    v = 5 * rng.randint(1, level) if kmh else rng.randint(2, 3 + 3 * level)
    m = 2 * rng.randint(50, 60 * level) if grams else 2 * rng.randint(1, 10 + 10 * level)
    unit = "kJ" if level >= 7 else "J"
    e = Fraction(m * v * v, 2) / (1000 if grams else 1) / (1000 if unit == "kJ" else 1)
    vtext = f"{v * 18 // 5} km/h" if kmh else f"{v} m/s"
    mtext = f"{m} g" if grams else f"{m} kg"
    what = rng.choice(["ball", "stone", "cart", "drone"])
    return {"question": f"What is the kinetic energy, in {unit}, of a {mtext} {what} moving at {vtext}?",
            "answer": fmt_decimal(e), "unit": unit,
            "spec": {"family": "kinetic", "m": m, "grams": grams, "v": v, "kmh": kmh, "unit": unit}}


def _electric(rng: random.Random, level: int) -> dict[str, Any]:
    current = rng.randint(2, 9)
    r = rng.randint(2, 10 + 10 * level)
    volts = current * r
    spec = {"family": "electric", "V": volts, "R": r, "level": level}
    device = rng.choice(["lamp", "motor", "heater", "resistor", "fan"])
    if level == 1:
        volts = rng.randint(3, 120)
        return {"question": f"A {volts} V source drives {current} A through a {device}. What power does the "
                            f"{device} use, in W?", "answer": str(volts * current), "unit": "W",
                "spec": {**spec, "V": volts, "R": 0, "I": current}}
    if level == 2:
        return {"question": f"A {volts} V source is connected across a {r} ohm {device}. What current flows, in A?",
                "answer": str(current), "unit": "A", "spec": spec}
    power = volts * current
    if level <= 3:
        return {"question": f"A {volts} V supply is connected across a {r} ohm resistor. What power does the "
                            "resistor dissipate, in W?", "answer": str(power), "unit": "W", "spec": spec}
    if level <= 7:
        minutes = rng.randint(2, 5 * level)
        unit = "kJ" if level >= 6 else "J"
        e = Fraction(power * minutes * 60, 1000 if unit == "kJ" else 1)
        return {"question": f"A heater of {r} ohm runs on {volts} V for {minutes} min. How much energy does it use, "
                            f"in {unit}?", "answer": fmt_decimal(e), "unit": unit,
                "spec": {**spec, "minutes": minutes, "unit": unit}}
    hours, price = rng.randint(2, 3 * level), rng.randint(12, 40)
    cost = Fraction(power * hours * price, 1000)
    return {"question": f"A heater of {r} ohm runs on {volts} V for {hours} h. Electricity costs {price} cents per "
                        "kWh. What does the energy cost, in cents?", "answer": fmt_decimal(cost), "unit": "cents",
            "spec": {**spec, "hours": hours, "price": price, "unit": "cents"}}


_HEAT = {"water": 4186, "aluminium": 900, "iron": 450, "copper": 385}


def _heat(rng: random.Random, level: int) -> dict[str, Any]:
    material = rng.choice(list(_HEAT))
    c = _HEAT[material]
    grams = level >= 4
    m = 10 * rng.randint(5, 20 * level) if grams else rng.randint(1, 2 + level)
    t1 = rng.randint(5, 30)
    t2 = t1 + rng.randint(3, 8 * level)
    unit = "kJ" if level >= 6 else "J"
    q = Fraction(m * c * (t2 - t1), 1000 if grams else 1) / (1000 if unit == "kJ" else 1)
    mtext = f"{m} g" if grams else f"{m} kg"
    return {"question": f"How much heat, in {unit}, warms {mtext} of {material} from {t1} C to {t2} C? "
                        f"(specific heat {c} J/(kg C))", "answer": fmt_decimal(q), "unit": unit,
            "spec": {"family": "heat", "m": m, "grams": grams, "c": c, "t1": t1, "t2": t2, "unit": unit}}


_AREAS_CM2 = [16, 20, 25, 40, 50, 80, 125, 160, 200, 250, 320, 400, 500, 625, 800, 1250, 1600, 2000, 2500]


def _pressure(rng: random.Random, level: int) -> dict[str, Any]:
    what = rng.choice(["box", "crate", "statue", "tank"])
    if level <= 3:
        area = rng.randint(2, 4 + 2 * level)
        m = area * rng.randint(1, 10 + 10 * level)
        return {"question": f"A {m} kg {what} rests on a face of area {area} m^2. What pressure does it exert, in "
                            "Pa? (take g = 10 m/s^2)", "answer": str(m * 10 // area), "unit": "Pa",
                "spec": {"family": "pressure", "m": m, "area_m2": area, "unit": "Pa"}}
    m = rng.randint(2, 6 + 12 * level)
    area = rng.choice(_AREAS_CM2[: 2 * level])
    unit = "kPa" if level >= 6 else "Pa"
    p = Fraction(m * 10 * 10000, area) / (1000 if unit == "kPa" else 1)
    return {"question": f"A {m} kg {what} rests on a face of area {area} cm^2. What pressure does it exert, in "
                        f"{unit}? (take g = 10 m/s^2)", "answer": fmt_decimal(p), "unit": unit,
            "spec": {"family": "pressure", "m": m, "area": area, "unit": unit}}


_MAKERS = {"speed": _speed, "force": _force, "kinetic": _kinetic, "electric": _electric, "heat": _heat,
           "pressure": _pressure}


def make_science(rng: random.Random, level: int) -> dict[str, Any]:
    # heat multiplies by a 3-4 digit specific heat: too long a computation for the first levels
    p = _MAKERS[rng.choice(FAMILIES if level >= 3 else [f for f in FAMILIES if f != "heat"])](rng, level)
    p["tolerance"] = TOLERANCE
    return p


# ============================================================================== solvers
def _solve_speed(s: dict[str, Any], method: str, w: Work) -> Fraction:
    d = s["d"]
    if s["km"]:
        d = w.op(d, "number")
        w.line(f"distance: {fmt_decimal(Fraction(s['d'], 1000))} km = {d} m")
    t = _to_seconds(s["h"], s["m"], s["s"], method, w)
    w.line(f"v = d / t = {d} / {t}")
    v = divide_exact(d, t, w, method)
    w.line(f"v = {v} m/s")
    if s["unit"] == "m/s":
        return Fraction(v)
    w.line(f"In km/h: 1 m/s = 3.6 km/h, so {v} * 36 / 10.")
    return _shift(multiply(v, 36, w, method), 1, w, "km/h")


def _solve_force(s: dict[str, Any], method: str, w: Work) -> Fraction:
    mass = s["mass"]
    if s["tonnes"]:
        mass = w.op(mass, "number")
        w.line(f"mass: {fmt_decimal(Fraction(s['mass'], 1000))} t = {mass} kg")
    a = s["a"]
    if s["t"]:
        v0, v1 = s["v0"], s["v1"]
        if s["kmh"]:
            v0 = _kmh_to_ms(v0 * 18 // 5, method, w) if v0 else 0
            v1 = _kmh_to_ms(v1 * 18 // 5, method, w)
        dv = w.op(v1 - v0, "number")
        w.line(f"change of speed: {v1} - {v0} = {dv} m/s")
        if method != "column":  # momentum first: F = m * dv / t
            w.line(f"F = m * dv / t = {mass} * {dv} / {s['t']}")
            mdv = multiply(mass, dv, w, method)
            w.line(f"m * dv = {mdv}")
            f = divide_exact(mdv, s["t"], w, method)
            w.line(f"F = {f} N")
            return _force_rest(s, f, method, w)
        w.line(f"a = {dv} / {s['t']}")
        a = divide_exact(dv, s["t"], w, method)
        w.line(f"a = {a} m/s^2")
    w.line(f"F = m * a = {mass} * {a}")
    f = multiply(mass, a, w, method)
    w.line(f"F = {f} N")
    return _force_rest(s, f, method, w)


def _force_rest(s: dict[str, Any], f: int, method: str, w: Work) -> Fraction:
    """From the force on: the work over a distance, or the force in the asked unit."""
    if s["dist"]:
        w.line(f"W = F * d = {f} * {s['dist']}")
        work = multiply(f, s["dist"], w, method)
        w.line(f"W = {work} J")
        return _shift(work, 3, w, "in kJ")
    return _shift(f, 3, w, "in kN") if s["unit"] == "kN" else Fraction(f)


def _solve_kinetic(s: dict[str, Any], method: str, w: Work) -> Fraction:
    v = _kmh_to_ms(s["v"] * 18 // 5, method, w) if s["kmh"] else s["v"]
    w.line(f"E = m * v^2 / 2 with v = {v} m/s")
    if method == "column":
        v2 = multiply(v, v, w, method)
        w.line(f"v^2 = {v2}")
        mv2 = multiply(s["m"], v2, w, method)
        w.line(f"m * v^2 = {s['m']} * {v2} = {mv2}")
        e = divide_exact(mv2, 2, w, method)
        w.line(f"half of it: {e}")
    else:  # halve the (even) mass first
        half = divide_exact(s["m"], 2, w, method)
        w.line(f"m / 2 = {half}")
        v2 = multiply(v, v, w, method)
        w.line(f"v^2 = {v2}")
        e = multiply(half, v2, w, method)
        w.line(f"E = {half} * {v2} = {e}")
    out = Fraction(e)
    if s["grams"]:
        out = _shift(e, 3, w, "grams to kg, E in J")
    if s["unit"] == "kJ":
        out = out / 1000
        w.line(f"in kJ: {fmt_decimal(out)}")
    return out


def _solve_electric(s: dict[str, Any], method: str, w: Work) -> Fraction:
    if s["level"] == 1:
        w.line(f"P = V * I = {s['V']} * {s['I']}")
        return Fraction(multiply(s["V"], s["I"], w, method))
    w.line(f"I = V / R = {s['V']} / {s['R']}")
    current = divide_exact(s["V"], s["R"], w, method)
    w.line(f"I = {current} A")
    if s["level"] == 2:
        return Fraction(current)
    if method == "column":
        w.line(f"P = V * I = {s['V']} * {current}")
        power = multiply(s["V"], current, w, method)
    else:  # P = V^2 / R
        w.line(f"P = V^2 / R = {s['V']}^2 / {s['R']}")
        v2 = multiply(s["V"], s["V"], w, method)
        w.line(f"V^2 = {v2}")
        power = divide_exact(v2, s["R"], w, method)
    w.line(f"P = {power} W")
    if s["level"] <= 3:
        return Fraction(power)
    if "minutes" in s:
        secs = multiply(s["minutes"], 60, w, method)
        w.line(f"t = {s['minutes']} min = {secs} s; E = P * t = {power} * {secs}")
        e = multiply(power, secs, w, method)
        w.line(f"E = {e} J")
        return _shift(e, 3, w, "in kJ") if s["unit"] == "kJ" else Fraction(e)
    wh = multiply(power, s["hours"], w, method)
    w.line(f"E = P * t = {power} W * {s['hours']} h = {wh} Wh")
    kwh = _shift(wh, 3, w, "in kWh")
    w.line(f"cost = {fmt_decimal(kwh)} kWh * {s['price']} cents = {wh} * {s['price']} / 1000")
    return _shift(multiply(wh, s["price"], w, method), 3, w, "cost in cents")


def _solve_heat(s: dict[str, Any], method: str, w: Work) -> Fraction:
    dt = w.op(s["t2"] - s["t1"], "number")
    w.line(f"temperature rise: {s['t2']} - {s['t1']} = {dt} C")
    w.line(f"Q = m * c * dT = {s['m']} * {s['c']} * {dt}" + (" / 1000 (grams to kg)" if s["grams"] else ""))
    if method == "column":
        mc = multiply(s["m"], s["c"], w, method)
        w.line(f"m * c = {mc}")
        q = multiply(mc, dt, w, method)
        w.line(f"times dT: {q}")
    else:  # heat per kilogram first
        cdt = multiply(s["c"], dt, w, method)
        w.line(f"c * dT = {cdt} J per kg")
        q = multiply(cdt, s["m"], w, method)
        w.line(f"times m: {q}")
    out = _shift(q, 3, w, "grams to kg, Q in J") if s["grams"] else Fraction(q)
    if s["unit"] == "kJ":
        out = out / 1000
        w.line(f"in kJ: {fmt_decimal(out)}")
    return out


def _solve_pressure(s: dict[str, Any], method: str, w: Work) -> Fraction:
    if method != "column":  # mass per area first, then times g
        area = s.get("area_m2") or s["area"]
        if "area_m2" in s:
            w.line(f"p = m * g / A = ({s['m']} / {area}) * 10")
            per = divide_exact(s["m"], area, w, method)
            p = multiply(per, 10, w, method)
        else:
            w.line(f"p = m * g / A, A = {area} / 10000 m^2, so p = {s['m']} * (10 * 10000 / {area})")
            per = divide_exact(100000, area, w, method)
            p = multiply(s["m"], per, w, method)
        w.line(f"p = {p} Pa")
        return _shift(p, 3, w, "in kPa") if s["unit"] == "kPa" else Fraction(p)
    f = multiply(s["m"], 10, w, method)
    w.line(f"F = m * g = {s['m']} * 10 = {f} N")
    if "area_m2" in s:
        w.line(f"p = F / A = {f} / {s['area_m2']}")
        return Fraction(divide_exact(f, s["area_m2"], w, method))
    w.line(f"A = {s['area']} cm^2 = {s['area']} / 10000 m^2, so p = F / A = {f} * 10000 / {s['area']}")
    top = w.op(f * 10000, "number")
    w.line(f"{f} * 10000 = {top}")
    p = divide_exact(top, s["area"], w, method)
    w.line(f"p = {p} Pa")
    return _shift(p, 3, w, "in kPa") if s["unit"] == "kPa" else Fraction(p)


_SOLVERS = {"speed": _solve_speed, "force": _solve_force, "kinetic": _solve_kinetic, "electric": _solve_electric,
            "heat": _solve_heat, "pressure": _solve_pressure}


def solve_science(spec: dict[str, Any], method: str, w: Work) -> str:
    """Write the worked solution into ``w`` and return the answer as a decimal string."""
    return fmt_decimal(_SOLVERS[spec["family"]](spec, method, w))


def science_final(answer: str, unit: str) -> str:
    return f"The answer is \\boxed{{{answer}}} {unit}."


__all__ = ["FAMILIES", "TOLERANCE", "make_science", "science_final", "solve_science"]
